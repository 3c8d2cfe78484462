"""`RVCConfig`: every number that defines an RVC synthesizer, with the official presets.

The model numbers are RVC's `configs/v1/*.json` / `configs/v2/*.json` (and Applio's extra 24 kHz file);
the audio numbers (FFT size, hop, mel bins, training segment) come from the same files' `data`/`train`
sections and are what the feature, training and conversion code use.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig

# Upsampling layouts that differ between the official configs; everything else is shared.
# key: (version, sampling_rate) -> (upsample_rates, upsample_kernel_sizes, filter_length, hop_length,
#                                    n_mel_channels, train segment_size in samples)
_PRESETS: dict[tuple[str, int], tuple[list[int], list[int], int, int, int, int]] = {
    ("v1", 32000): ([10, 4, 2, 2, 2], [16, 16, 4, 4, 4], 1024, 320, 80, 12800),
    ("v1", 40000): ([10, 10, 2, 2], [16, 16, 4, 4], 2048, 400, 125, 12800),
    ("v1", 48000): ([10, 6, 2, 2, 2], [16, 16, 4, 4, 4], 2048, 480, 128, 11520),
    ("v2", 24000): ([10, 6, 2, 2], [20, 12, 4, 4], 1024, 240, 80, 8640),  # Applio only
    ("v2", 32000): ([10, 8, 2, 2], [20, 16, 4, 4], 1024, 320, 80, 12800),
    ("v2", 40000): ([10, 10, 2, 2], [16, 16, 4, 4], 2048, 400, 125, 12800),  # RVC uses v1/40k.json for v2
    ("v2", 48000): ([12, 10, 2, 2], [24, 20, 4, 4], 2048, 480, 128, 17280),
}

SAMPLE_RATE_NAMES = {"24k": 24000, "32k": 32000, "40k": 40000, "48k": 48000}
CONTENT_DIMS = {"v1": 256, "v2": 768}


def parse_sample_rate(sample_rate: int | str) -> int:
    """`"40k"`, `"40000"`, `40000` -> 40000; anything else raises `ValueError`."""
    if isinstance(sample_rate, str):
        key = sample_rate.strip().lower()
        if key in SAMPLE_RATE_NAMES:
            return SAMPLE_RATE_NAMES[key]
        if key.isdigit():
            sample_rate = int(key)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"unknown sample rate {sample_rate!r}; expected one of 24k, 32k, 40k, 48k")
    return sample_rate


def sample_rate_name(sample_rate: int) -> str:
    """40000 -> "40k" (RVC's spelling in file names and exported `sr` fields)."""
    return f"{sample_rate // 1000}k"


class RVCConfig(PretrainedConfig):
    """Configuration of an RVC synthesizer (`SynthesizerTrnMs{256,768}NSFsid[_nono]` in RVC).

    The first 18 fields mirror RVC's positional constructor / exported `config` list; `version`
    (v1 = 256-d content features, v2 = 768-d) and `use_f0` (NSF pitch decoder or plain HiFi-GAN) pick
    the class. The audio fields describe the spectrogram the posterior encoder and the losses use.
    """

    model_type = "rvc"

    def __init__(
        self,
        version: str = "v2",
        use_f0: bool = True,
        sampling_rate: int = 40000,
        spec_channels: int | None = None,
        inter_channels: int = 192,
        hidden_channels: int = 192,
        filter_channels: int = 768,
        n_heads: int = 2,
        n_layers: int = 6,
        kernel_size: int = 3,
        p_dropout: float = 0.0,
        resblock: str = "1",
        resblock_kernel_sizes: list[int] | None = None,
        resblock_dilation_sizes: list[list[int]] | None = None,
        upsample_rates: list[int] | None = None,
        upsample_initial_channel: int = 512,
        upsample_kernel_sizes: list[int] | None = None,
        spk_embed_dim: int = 109,
        gin_channels: int = 256,
        use_posterior_encoder: bool = True,
        filter_length: int | None = None,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mel_channels: int | None = None,
        mel_fmin: float = 0.0,
        mel_fmax: float | None = None,
        train_segment_size: int | None = None,
        content_encoder: str = "contentvec",
        speaker_id: int = 0,
        **kwargs: Any,
    ) -> None:
        if version not in CONTENT_DIMS:
            raise ValueError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
        if str(resblock) != "1":
            raise ValueError(f"resblock {resblock!r} is not supported: every RVC config uses '1'")
        sampling_rate = parse_sample_rate(sampling_rate)
        preset = _PRESETS.get((version, sampling_rate)) or _PRESETS.get(("v2", sampling_rate))
        rates, kernels, n_fft, hop, mels, seg = preset if preset else (None, None, None, None, None, None)
        self.version = version
        self.use_f0 = bool(use_f0)
        self.sampling_rate = sampling_rate
        self.upsample_rates = list(upsample_rates if upsample_rates is not None else rates or [10, 10, 2, 2])
        self.upsample_kernel_sizes = list(
            upsample_kernel_sizes if upsample_kernel_sizes is not None else kernels or [16, 16, 4, 4]
        )
        self.filter_length = filter_length or n_fft or 2048
        self.hop_length = hop_length or hop or math.prod(self.upsample_rates)
        self.win_length = win_length or self.filter_length
        self.n_mel_channels = n_mel_channels or mels or 128
        self.mel_fmin = mel_fmin
        self.mel_fmax = mel_fmax
        self.train_segment_size = train_segment_size or seg or 32 * self.hop_length
        self.spec_channels = spec_channels or self.filter_length // 2 + 1
        self.inter_channels = inter_channels
        self.hidden_channels = hidden_channels
        self.filter_channels = filter_channels
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        self.p_dropout = float(p_dropout)
        self.resblock = "1"
        self.resblock_kernel_sizes = list(resblock_kernel_sizes or [3, 7, 11])
        self.resblock_dilation_sizes = [list(d) for d in (resblock_dilation_sizes or [[1, 3, 5]] * 3)]
        self.upsample_initial_channel = upsample_initial_channel
        self.spk_embed_dim = spk_embed_dim
        self.gin_channels = gin_channels
        self.use_posterior_encoder = bool(use_posterior_encoder)
        self.content_encoder = content_encoder
        self.speaker_id = speaker_id
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(
                f"upsample_rates {self.upsample_rates} multiply to {math.prod(self.upsample_rates)}, "
                f"but the hop length is {self.hop_length}"
            )
        super().__init__(**kwargs)

    # --- derived numbers -------------------------------------------------------------------------
    @property
    def content_dim(self) -> int:
        """Width E of the content features the text encoder reads (256 for v1, 768 for v2)."""
        return CONTENT_DIMS[self.version]

    @property
    def sample_rate_name(self) -> str:
        return sample_rate_name(self.sampling_rate)

    @property
    def rvc_class_name(self) -> str:
        """The RVC WebUI class this config corresponds to."""
        width = CONTENT_DIMS[self.version]
        return f"SynthesizerTrnMs{width}NSFsid" + ("" if self.use_f0 else "_nono")

    # --- RVC's own representations -------------------------------------------------------------
    @classmethod
    def from_preset(
        cls, sample_rate: int | str = 40000, version: str = "v2", use_f0: bool = True, **overrides: Any
    ) -> RVCConfig:
        """The official configuration for a sample rate and version (e.g. `("40k", "v2", True)`)."""
        sr = parse_sample_rate(sample_rate)
        if (version, sr) not in _PRESETS:
            known = ", ".join(f"{v} {sample_rate_name(s)}" for v, s in _PRESETS)
            raise ValueError(f"RVC has no {version} {sample_rate_name(sr)} configuration; known: {known}")
        return cls(version=version, use_f0=use_f0, sampling_rate=sr, **overrides)

    def to_rvc_list(self) -> list[Any]:
        """The 18-entry `config` list of an exported RVC voice (index 1 is RVC's placeholder 32)."""
        return [
            self.spec_channels,
            32,
            self.inter_channels,
            self.hidden_channels,
            self.filter_channels,
            self.n_heads,
            self.n_layers,
            self.kernel_size,
            self.p_dropout if self.p_dropout != int(self.p_dropout) else int(self.p_dropout),
            self.resblock,
            list(self.resblock_kernel_sizes),
            [list(d) for d in self.resblock_dilation_sizes],
            list(self.upsample_rates),
            self.upsample_initial_channel,
            list(self.upsample_kernel_sizes),
            self.spk_embed_dim,
            self.gin_channels,
            self.sampling_rate,
        ]

    @classmethod
    def from_rvc_list(
        cls, values: list[Any], version: str = "v1", use_f0: bool = True, **overrides: Any
    ) -> RVCConfig:
        """Build from an exported voice's 18-entry `config` list (index 17 may be int or "40k").

        Every entry is type-checked first, so a malformed list raises `ValueError` naming the entry instead of a
        `TypeError` from deep inside the model constructors.
        """
        if not isinstance(values, (list, tuple)) or len(values) != 18:
            found = f"{len(values)} entries" if isinstance(values, (list, tuple)) else f"a {type(values).__name__}"
            raise ValueError(f"an RVC config is a list of 18 entries, not {found}")
        entry = _RVCListReader(values)
        positive = {name: entry.positive(i) for i, name in _POSITIVE_ENTRIES.items()}
        # entry 1 (segment_size) is a placeholder (32) in exported files that inference never reads: not checked
        drop, resblock, sr = entry.value(8), entry.value(9), entry.value(17)
        entry.check(8, isinstance(drop, (int, float)) and not isinstance(drop, bool) and 0 <= drop < 1,
                    "a number in [0, 1)")
        entry.check(9, isinstance(resblock, (str, int)) and not isinstance(resblock, bool), '"1"')
        entry.check(17, isinstance(sr, (str, int)) and not isinstance(sr, bool), 'e.g. 40000 or "40k"')
        resblock_kernels = entry.integers(10)
        dilations = entry.value(11)
        entry.check(11, isinstance(dilations, (list, tuple)) and len(dilations) == len(resblock_kernels),
                    f"{len(resblock_kernels)} lists of integers, one per resblock kernel")
        dilation_lists = [entry.integers(11, item) for item in dilations]
        rates, kernels = entry.integers(12), entry.integers(14)
        if len(rates) != len(kernels):
            raise ValueError(f"entries 12 and 14 (upsample_rates {rates}, upsample_kernel_sizes {kernels}) "
                             "differ in length")
        return cls(
            version=version,
            use_f0=use_f0,
            sampling_rate=parse_sample_rate(sr),
            p_dropout=float(drop),
            resblock=str(resblock),
            resblock_kernel_sizes=resblock_kernels,
            resblock_dilation_sizes=dilation_lists,
            upsample_rates=rates,
            upsample_kernel_sizes=kernels,
            **positive,
            **overrides,
        )


# Entries of the exported `config` list that are positive integers (RVC's constructor argument names).
_POSITIVE_ENTRIES = {
    0: "spec_channels", 2: "inter_channels", 3: "hidden_channels", 4: "filter_channels", 5: "n_heads",
    6: "n_layers", 7: "kernel_size", 13: "upsample_initial_channel", 15: "spk_embed_dim", 16: "gin_channels",
}
_ENTRY_NAMES = {
    **_POSITIVE_ENTRIES, 1: "segment_size", 8: "p_dropout", 9: "resblock", 10: "resblock_kernel_sizes",
    11: "resblock_dilation_sizes", 12: "upsample_rates", 14: "upsample_kernel_sizes", 17: "sampling_rate",
}


class _RVCListReader:
    """Typed access to an exported `config` list; errors name the entry by index and RVC's argument name."""

    def __init__(self, values: list[Any] | tuple[Any, ...]) -> None:
        self.values = values

    def value(self, index: int) -> Any:
        return self.values[index]

    def _label(self, index: int) -> str:
        return f"entry {index} ({_ENTRY_NAMES[index]})"

    def check(self, index: int, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"{self._label(index)} is {self.values[index]!r}; expected {expected}")

    def positive(self, index: int) -> int:
        value = self.values[index]
        # bool is an int subclass, but True as a channel count is a broken file, not 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{self._label(index)} is {value!r}; expected a positive integer")
        return value

    def integers(self, index: int, *nested: Any) -> list[int]:
        """A non-empty list of positive integers: entry `index`, or the one item given in `nested` inside it."""
        value = nested[0] if nested else self.values[index]
        if (not isinstance(value, (list, tuple)) or not value
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
            raise ValueError(f"{self._label(index)} holds {value!r}; expected a list of positive integers")
        return list(value)


def preset_for_kernels(upsample_kernel_sizes: list[int]) -> list[tuple[str, int]]:
    """Presets whose upsample kernel list matches (shapes store kernels, not rates)."""
    return [key for key, p in _PRESETS.items() if p[1] == list(upsample_kernel_sizes)]
