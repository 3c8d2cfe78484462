"""RVC's voice-conversion pipeline (WebUI `Pipeline.pipeline` / `Pipeline.vc`, spec §4) on a base plus LoRA voices.

`VoiceConverter.convert(audio_or_path, ...)` runs, in RVC's order:

1. audio in: any file `load_audio` reads (or an array), mono float at 16 kHz, peak-limited to 0.95;
2. 48 Hz Butterworth high-pass (filtfilt), quiet-point split search for audio longer than `x_max`, reflect padding
   by `x_pad` seconds (`WindowConfig`; fp32 constants 1/6/38/41 s by default, fp16 3/10/60/65 s in half precision);
3. F0 on the whole padded audio (any `rvc_peft.features.pitch` method, or your own callable), key shift, coarse pitch;
4. per segment: content features (50 fps), optional retrieval blend with a faiss index, ×2 nearest interpolation to
   100 fps, RVC's `p_len` rule, consonant protection, `infer`, trim the padding, concatenate;
5. RMS envelope mix with the (filtered) input, optional resampling, peak scaling to 0.99.

The result is float32 in [-1, 1] (like Applio); `write_audio(..., subtype="PCM_16")` writes WebUI's int16 file.

One deliberate difference: RVC trims every segment by `[t_pad_tgt : -t_pad_tgt]`, which skips 10 ms of input at
about half of the segment boundaries of long files (see `segmentation.plan_segments`). We keep exactly the output
that covers each segment, so long files stay continuous; `rvc_trim=True` restores RVC's trimming.

The per-call settings (key, index, index rate, protect, RMS mix, ...) are one validated `ConversionSettings`
(`settings.py`), passed as `settings=` or as keyword arguments. The module is one class, `VoiceConverter`, kept whole
so that RVC's pipeline reads top to bottom in RVC's order; the self-contained steps live beside it (`segmentation`,
`audio_io`, `voices`, `settings`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..features.pitch import f0_to_coarse
from .audio_io import (
    SAMPLE_RATE,
    AudioInput,
    ConversionError,
    prepare_audio,
    rms_mix,
    scale_peak,
    write_audio,
)
from .segmentation import (
    WINDOW,
    Segment,
    WindowConfig,
    find_split_points,
    highpass,
    plan_segments,
    reflect_pad,
)
from .settings import ConversionSettings, PitchFunction

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..models import RVCSynthesizer
    from .settings import ConversionOverrides
    from .streaming import StreamingConverter
    from .voices import VoiceBank


@dataclass
class ConversionTimings:
    """Seconds spent per stage during the last conversion (summed over segments and clips)."""

    content_encoder: float = 0.0
    retrieval: float = 0.0
    pitch: float = 0.0
    synthesizer: float = 0.0
    postprocess: float = 0.0
    total: float = 0.0
    audio_seconds: float = 0.0
    segments: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _Row:
    """One segment ready for the synthesizer (tensors on the model's device, 100 fps)."""

    phone: torch.Tensor  # [T, E]
    pitch: torch.Tensor | None  # [T] long
    pitchf: torch.Tensor | None  # [T] float
    speaker_id: int
    voice: str | None
    keep_frames: int | None  # None: RVC's [t_pad_tgt : -t_pad_tgt]


@dataclass
class _Clip:
    """One input being converted: its filtered 16 kHz audio, plan and collected output pieces."""

    name: str
    filtered: np.ndarray  # float64 [L] at 16 kHz after the high-pass
    padded: np.ndarray  # float64 [L + 2·t_pad]
    segments: list[Segment]
    pitch: np.ndarray | None  # int64 [p_len] coarse
    pitchf: np.ndarray | None  # float32 [p_len] Hz
    voice: str | None
    speaker_id: int
    index: Any
    pieces: list[np.ndarray] = field(default_factory=list)


def content_width_problem(encoder: str, width: int, version: str, model_width: int) -> str:
    """Why features of `width` cannot drive an RVC `version` model reading `model_width`-d ones, and what to pass."""
    wanted = {256: "the content encoder's 256-d projected output (version='v1', `--version v1`)",
              768: "the content encoder's 768-d last layer (version='v2', `--version v2`)"}
    need = wanted.get(model_width, f"{model_width}-d features")
    return (f"the content encoder {encoder} gives {width}-d features, but the synthesizer is an RVC {version} model "
            f"that reads {model_width}-d ones: it needs {need}; load the content encoder with version={version!r} "
            "or use a base of the encoder's version")


def _fit(track: np.ndarray, length: int) -> np.ndarray:
    track = np.asarray(track, dtype=np.float32).reshape(-1)
    return track[:length] if len(track) >= length else np.pad(track, (0, length - len(track)))


class VoiceConverter:
    """RVC voice conversion with one base synthesizer and any number of LoRA voices.

    Args:
        model: an `RVCSynthesizer` (base or exported voice), a `VoiceBank` (base + adapters), or a `PeftModel` on an
            RVC base (its adapters become voices).
        content_encoder: a `ContentEncoder` (or any module mapping wav16k [B, L] -> [B, F, E] at 50 fps with
            `version`/`output_dim` attributes) of the model's RVC version.
        f0_method: a name from `rvc_peft.features.pitch.F0_METHODS` or a callable `(audio16k [L], p_len) -> f0 Hz
            [p_len]` (key shift is applied afterwards).
        rmvpe_model: an `RMVPE` instance or path/hub id, for `f0_method="rmvpe"`.
        index: default retrieval index (`RetrievalIndex`, a path to an RVC `.index`, or None).
        speaker_id: default speaker row of `emb_g` when the voice does not name one.
        half: run in float16 (GPU) with RVC's fp16 windowing constants.
        window: windowing constants; default fp32 (1/6/38/41 s) or fp16 (3/10/60/65 s) from `half`.
        seed: seeds the synthesizer's noise for reproducible output (None: torch's global RNG).
        merge_single_voice: merge a voice's LoRA into the base while it is used alone (fast path).
        rvc_trim: reproduce RVC's segment trimming exactly (see the module docstring).
        batch_size: segments synthesised per forward pass.
        backend: how the synthesizer runs (`backends.py`): "torch" (reference path, default), "torch-fast" (merged,
            folded, channels-last copy per voice: same output to 1e-4 in fp32) or "onnx" (each voice exported once
            and run by onnxruntime). "torch-fast" and "onnx" run one voice per batch.
        precision: the synthesizer's precision, "fp32", "bf16" ("torch-fast" only: CPUs with avx512_bf16/AMX, GPUs)
            or "fp16" (GPUs); default "fp16" with `half`, else "fp32".
        onnx_cache_dir: where backend "onnx" writes its exported voices (default: a temporary folder, removed with
            the converter).
    """

    def __init__(
        self,
        model: RVCSynthesizer | VoiceBank | Any,
        content_encoder: torch.nn.Module,
        *,
        f0_method: str | PitchFunction = "rmvpe",
        rmvpe_model: Any = None,
        index: Any = None,
        speaker_id: int = 0,
        half: bool = False,
        window: WindowConfig | None = None,
        seed: int | None = None,
        merge_single_voice: bool = True,
        rvc_trim: bool = False,
        batch_size: int = 4,
        backend: str = "torch",
        precision: str | None = None,
        onnx_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        from peft import PeftModel

        from .backends import make_backend
        from .voices import VoiceBank

        if isinstance(model, VoiceBank):
            self.voices = model
        elif isinstance(model, PeftModel):
            self.voices = VoiceBank.from_peft_model(model)
        else:
            self.voices = VoiceBank(model)
        self.config = self.voices.config
        version = getattr(content_encoder, "version", self.config.version)
        dim = getattr(content_encoder, "output_dim", self.config.content_dim)
        if version != self.config.version or dim != self.config.content_dim:
            raise ConversionError(
                getattr(content_encoder, "name_or_path", "content encoder") or "content encoder",
                f"gives {version} features of width {dim}, but the synthesizer is an RVC {self.config.version} model "
                f"that reads {self.config.content_dim}-d features; load the content encoder with "
                f"version={self.config.version!r}")
        self.content_encoder = content_encoder
        self.f0_method = f0_method
        self.rmvpe_model = rmvpe_model
        self.default_index = index
        self.default_speaker_id = int(speaker_id)
        self.half = bool(half)
        self.window = window or (WindowConfig.fp16() if half else WindowConfig.fp32())
        self.seed = seed
        self.merge_single_voice = merge_single_voice
        self.rvc_trim = rvc_trim
        self.batch_size = max(1, int(batch_size))
        self.last_timings = ConversionTimings()
        self._index_cache: dict[str, Any] = {}
        self.device = next(self.voices.synthesizer.parameters()).device
        self.precision = precision if precision is not None else ("fp16" if half else "fp32")
        self.backend = make_backend(backend, self.precision, self.device, cache_dir=onnx_cache_dir)
        if backend == "torch" and self.precision == "fp16":
            self.voices.synthesizer.half()  # the other backends keep the bank float32 and cast their own copies
        if half:
            self.content_encoder.half()

    # --- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike,
        adapters: str | os.PathLike | Sequence[str | os.PathLike] | dict[str, Any] | None = None,
        *,
        content_encoder: str | os.PathLike | torch.nn.Module,
        f0_method: str | PitchFunction = "rmvpe",
        rmvpe: Any = None,
        index: Any = None,
        device: str | torch.device = "cpu",
        half: bool = False,
        **kwargs: Any,
    ) -> VoiceConverter:
        """Load a base (any `load_synthesizer` source), adapters (paths/hub ids, or {name: path}) and the encoder.

        Adapter names default to the folder names. Extra keyword arguments go to `VoiceConverter(...)` (e.g.
        `backend="torch-fast", precision="bf16"` or `backend="onnx"`).
        """
        from .voices import VoiceBank

        bank = VoiceBank.from_pretrained(base, device=device)
        if adapters is not None:
            items = adapters.items() if isinstance(adapters, dict) else [
                (None, a) for a in ([adapters] if isinstance(adapters, (str, os.PathLike)) else adapters)]
            for name, source in items:
                bank.add_voice(source, name=name)
        if not isinstance(content_encoder, torch.nn.Module):
            from ..features.content_encoder import load_content_encoder

            content_encoder = load_content_encoder(content_encoder, bank.config.version, device=device)
        rmvpe_model = rmvpe
        if f0_method == "rmvpe" and bank.config.use_f0 and not hasattr(rmvpe, "infer_from_audio"):
            from ..features.pitch import load_rmvpe

            rmvpe_model = load_rmvpe(rmvpe, device=str(device))
        return cls(bank, content_encoder, f0_method=f0_method, rmvpe_model=rmvpe_model, index=index, half=half,
                   **kwargs)

    @property
    def sample_rate(self) -> int:
        """The synthesizer's output rate (before any `resample_sr`)."""
        return int(self.config.sampling_rate)

    # --- public API -----------------------------------------------------------------------------------------
    def convert(
        self,
        audio_or_path: AudioInput,
        *,
        voice: str | None = None,
        settings: ConversionSettings | None = None,
        input_sample_rate: int | None = None,
        progress: bool = False,
        **overrides: Unpack[ConversionOverrides],
    ) -> tuple[np.ndarray, int]:
        """Convert one input to the given voice. Returns (float32 audio [N] in [-1, 1], sample rate).

        Args:
            audio_or_path: file path, array (`input_sample_rate`, default 16 kHz) or `(array, sample_rate)`.
            voice: name of a loaded voice (adapter or blend); None: the voice bank's active one (the base when no
                voice is loaded); `VoiceBank.BASE` ("__base__"): the base alone.
            settings: a `ConversionSettings` (key, index, index_rate, protect, rms_mix_rate, filter_radius,
                resample_sr, f0_method, speaker_id); default: `ConversionSettings()` (RVC WebUI's defaults).
            overrides: any of those settings as keyword arguments, applied on top of `settings`
                (`convert(audio, f0_up_key=3, index_rate=0.5)`); an unknown keyword raises `TypeError` and a bad
                value `ValueError`, both before any audio is read.
        """
        settings = ConversionSettings.resolve(settings, overrides, "VoiceConverter.convert")
        return self.convert_batch([audio_or_path], [voice], settings=settings, input_sample_rate=input_sample_rate,
                                  progress=progress)[0]

    def convert_batch(
        self,
        inputs: Sequence[AudioInput],
        voices: Sequence[str | None] | None = None,
        *,
        settings: ConversionSettings | None = None,
        input_sample_rate: int | None = None,
        progress: bool = False,
        **overrides: Unpack[ConversionOverrides],
    ) -> list[tuple[np.ndarray, int]]:
        """Convert several inputs, each to its own voice, batching segments across them.

        When the inputs use more than one voice, each synthesizer forward pass mixes rows of different voices
        through PEFT's `adapter_names=` (the LoRA layers route every row to its adapter). Per-voice speaker ids and
        indexes apply row by row. `voices[i]` as `convert`'s `voice` (None = the active voice, `VoiceBank.BASE` =
        the base alone). `settings` / keyword settings as `convert`, for every input; returns one (audio, sample
        rate) per input.
        """
        voices = list(voices) if voices is not None else [None] * len(inputs)
        if len(voices) != len(inputs):
            raise ValueError(f"got {len(inputs)} inputs but {len(voices)} voices")
        settings = ConversionSettings.resolve(settings, overrides, "VoiceConverter.convert_batch")
        started = time.perf_counter()
        self.last_timings = timings = ConversionTimings()
        resolved = [self.voices.resolve(v) for v in voices]
        if len(set(resolved)) == 1:
            self.voices.activate(resolved[0], merge=self.merge_single_voice)
            row_voices = None  # the whole batch uses the active (possibly merged) voice
        else:
            self.voices.prepare_mixed()
            row_voices = resolved
        with _seeded(self.seed, self.device):
            clips = [self._prepare_clip(item, resolved[i], settings, input_sample_rate, timings)
                     for i, item in enumerate(inputs)]
            work = [(c, s) for c in clips for s in c.segments]
            timings.segments = len(work)
            bar = _progress(len(work), progress)
            for start in range(0, len(work), self.batch_size):
                chunk = work[start : start + self.batch_size]
                rows = [self._segment_row(clip, seg, settings, timings) for clip, seg in chunk]
                outputs = self._synthesize(rows, row_voices is not None, timings)
                for (clip, _), row, out in zip(chunk, rows, outputs):
                    clip.pieces.append(self._trim(out, row.keep_frames))
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        post_start = time.perf_counter()
        results = []
        for clip in clips:
            results.append(self._postprocess(clip, settings))
            timings.audio_seconds += len(clip.filtered) / SAMPLE_RATE
        timings.postprocess += time.perf_counter() - post_start
        timings.total = time.perf_counter() - started
        return results

    def stream(self, **settings: Any) -> StreamingConverter:
        """A `StreamingConverter` on this converter (block_seconds, extra_seconds, crossfade_seconds, voice, ...)."""
        from .streaming import StreamingConverter

        return StreamingConverter(self, **settings)

    def convert_file(
        self, input_path: str | os.PathLike, output_path: str | os.PathLike, *, subtype: str = "PCM_16",
        **kwargs: Any,
    ) -> Path:
        """Convert a file and write the result atomically (never over the input). Keyword arguments (`voice`,
        `settings`, settings) as `convert`."""
        if Path(output_path).resolve() == Path(input_path).resolve():
            raise ConversionError(str(input_path), "the output path is the input file; refusing to overwrite it")
        audio, rate = self.convert(input_path, **kwargs)
        return write_audio(output_path, audio, rate, subtype=subtype)

    # --- steps ----------------------------------------------------------------------------------------------
    def _resolve_index(self, index: Any, voice_index: Any) -> Any:
        chosen = index if index is not None else (voice_index if voice_index is not None else self.default_index)
        name = str(chosen) if isinstance(chosen, (str, os.PathLike)) else "retrieval index"
        if isinstance(chosen, (str, os.PathLike)):
            if name not in self._index_cache:
                from ..data.index import load_index

                self._index_cache[name] = load_index(chosen)  # raises IndexFileError (a ValueError) naming the file
            chosen = self._index_cache[name]
        dim = getattr(chosen, "dim", None)
        if chosen is not None and dim is not None and dim != self.config.content_dim:
            raise ConversionError(name, f"holds {dim}-d features, but this {self.config.version} model reads "
                                        f"{self.config.content_dim}-d ones (an index of another RVC version?)")
        return chosen

    def _pitch(self, padded: np.ndarray, p_len: int, f0_up_key: float, filter_radius: int,
               method: str | PitchFunction, name: str) -> tuple[np.ndarray, np.ndarray]:
        if callable(method):
            f0 = method(padded, p_len)
        else:
            from ..features.pitch import PitchError, extract_f0

            try:
                f0 = extract_f0(padded, method, p_len=p_len, f0_up_key=0, filter_radius=filter_radius,
                                rmvpe_model=self.rmvpe_model, device=str(self.device))
            except PitchError as err:
                raise ConversionError(name, f"pitch extraction failed: {err}") from err
        f0 = _fit(f0, p_len).astype(np.float64)
        f0 = f0 * 2 ** (f0_up_key / 12)  # RVC's key shift, applied to the (filtered) track before quantising
        return f0_to_coarse(f0), f0.astype(np.float32)

    def _prepare_clip(self, item: AudioInput, voice: str | None, settings: ConversionSettings,
                      input_sample_rate: int | None, timings: ConversionTimings) -> _Clip:
        audio, name = prepare_audio(item, input_sample_rate)
        filtered = highpass(audio)
        segments = plan_segments(find_split_points(filtered, self.window), self.window, rvc_trim=self.rvc_trim)
        padded = reflect_pad(filtered, self.window.t_pad)
        voice_info = self.voices.voice(voice) if voice is not None else None
        sid = settings.speaker_id if settings.speaker_id is not None else (
            voice_info.speaker_id if voice_info is not None and voice_info.speaker_id is not None
            else self.default_speaker_id)
        if not 0 <= int(sid) < self.config.spk_embed_dim:
            raise ConversionError(name, f"speaker id {sid} is out of range; this model has {self.config.spk_embed_dim} "
                                        "speaker rows")
        pitch = pitchf = None
        if self.config.use_f0:
            started = time.perf_counter()
            method = settings.f0_method if settings.f0_method is not None else self.f0_method
            pitch, pitchf = self._pitch(padded, len(padded) // WINDOW, settings.f0_up_key, settings.filter_radius,
                                        method, name)
            timings.pitch += time.perf_counter() - started
        chosen_index = self._resolve_index(settings.index, voice_info.index if voice_info is not None else None)
        return _Clip(name, filtered, padded, segments, pitch, pitchf, voice, int(sid), chosen_index)

    @torch.no_grad()
    def _segment_row(self, clip: _Clip, seg: Segment, settings: ConversionSettings, timings: ConversionTimings) -> _Row:
        """RVC's `Pipeline.vc` up to (not including) `infer`: features, retrieval, ×2, p_len, protect."""
        index_rate, protect = settings.index_rate, settings.protect
        audio = clip.padded[seg.start : seg.stop]
        started = time.perf_counter()
        encoder_dtype = next(self.content_encoder.parameters()).dtype
        wav = torch.from_numpy(np.ascontiguousarray(audio)).to(self.device, encoder_dtype)[None]
        feats = self.content_encoder(wav)  # [1, F, E] at 50 fps
        timings.content_encoder += time.perf_counter() - started
        if feats.shape[-1] != self.config.content_dim:  # an encoder without version/output_dim attributes
            raise ConversionError(clip.name, content_width_problem(
                getattr(self.content_encoder, "name_or_path", None) or type(self.content_encoder).__name__,
                int(feats.shape[-1]), self.config.version, self.config.content_dim))
        use_pitch = clip.pitch is not None
        protecting = protect < 0.5 and use_pitch
        feats0 = feats.clone() if protecting else None
        if clip.index is not None and index_rate != 0:
            started = time.perf_counter()
            blended = clip.index.blend(feats[0].float().cpu().numpy(), index_rate)
            feats = torch.from_numpy(np.ascontiguousarray(blended, dtype=np.float32)).to(self.device, feats.dtype)[None]
            timings.retrieval += time.perf_counter() - started
        feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)  # nearest: frames ×2
        p_len = min(len(audio) // WINDOW, feats.shape[1])
        feats = feats[:, :p_len]
        pitch = pitchf = None
        if use_pitch:
            pitch = torch.from_numpy(clip.pitch[seg.pitch_start : seg.pitch_stop][:p_len]).to(self.device)
            pitchf = torch.from_numpy(clip.pitchf[seg.pitch_start : seg.pitch_stop][:p_len]).to(self.device)
            if len(pitch) < p_len:  # cannot happen with RVC's frame arithmetic; guard against odd pitch callables
                raise ConversionError(clip.name, f"pitch track too short for a segment ({len(pitch)} < {p_len})")
        if protecting:
            feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)[:, :p_len]
            weight = torch.where(pitchf > 0, 1.0, float(protect))
            weight = torch.where(pitchf < 1, float(protect), weight).to(feats.dtype)[None, :, None]
            feats = (feats * weight + feats0 * (1 - weight)).to(feats0.dtype)
        return _Row(feats[0], pitch, pitchf, clip.speaker_id, clip.voice, seg.keep_frames)

    @torch.no_grad()
    def _synthesize(self, rows: list[_Row], mixed: bool, timings: ConversionTimings) -> list[np.ndarray]:
        """Run `infer` on rows padded to a common length; each output cut back to its own `T · hop` samples."""
        started = time.perf_counter()
        synth = self.voices.synthesizer
        dtype = next(synth.parameters()).dtype
        lengths = [row.phone.shape[0] for row in rows]
        longest = max(lengths)
        phone = torch.zeros(len(rows), longest, rows[0].phone.shape[1], device=self.device, dtype=dtype)
        for i, row in enumerate(rows):
            phone[i, : lengths[i]] = row.phone.to(dtype)
        kwargs: dict[str, Any] = {
            "phone_lengths": torch.tensor(lengths, device=self.device, dtype=torch.long),
            "sid": torch.tensor([row.speaker_id for row in rows], device=self.device, dtype=torch.long),
        }
        if rows[0].pitch is not None:
            pitch = torch.ones(len(rows), longest, device=self.device, dtype=torch.long)
            pitchf = torch.zeros(len(rows), longest, device=self.device, dtype=torch.float32)
            for i, row in enumerate(rows):
                pitch[i, : lengths[i]] = row.pitch
                pitchf[i, : lengths[i]] = row.pitchf
            kwargs.update(pitch=pitch, nsff0=pitchf)  # F0 stays float32 in half precision too, as in RVC
        voices = [row.voice for row in rows] if mixed else None
        audio = self.backend.infer(self.voices, phone, voices, **kwargs)[:, 0].float().cpu().numpy()
        hop = self.config.hop_length
        timings.synthesizer += time.perf_counter() - started
        return [audio[i, : lengths[i] * hop] for i in range(len(rows))]

    def _trim(self, out: np.ndarray, keep_frames: int | None) -> np.ndarray:
        pad = self.window.pad_frames() * self.config.hop_length
        if keep_frames is None:
            return out[pad : len(out) - pad] if len(out) > 2 * pad else out[:0]
        return out[pad : pad + keep_frames * self.config.hop_length]

    def _postprocess(self, clip: _Clip, settings: ConversionSettings) -> tuple[np.ndarray, int]:
        """Join a clip's pieces, RMS mix, optional resampling, peak scaling: (float32 [N] in [-1, 1], rate)."""
        audio = np.concatenate(clip.pieces) if clip.pieces else np.zeros(0, dtype=np.float32)
        if settings.rms_mix_rate != 1 and audio.size:
            audio = rms_mix(clip.filtered, audio, self.sample_rate, settings.rms_mix_rate)
        rate = self.sample_rate
        if rate != settings.resample_sr >= SAMPLE_RATE:
            import librosa

            audio = librosa.resample(audio, orig_sr=rate, target_sr=settings.resample_sr).astype(np.float32)
            rate = int(settings.resample_sr)
        return scale_peak(audio), rate


# --- small helpers ---------------------------------------------------------------------------------------------

class _seeded:
    """Context: fork torch's RNG and seed it (no-op for seed None), so `seed=` never disturbs the caller's RNG."""

    def __init__(self, seed: int | None, device: torch.device) -> None:
        self.seed = seed
        self.devices = [device] if device.type == "cuda" else []
        self._fork: Any = None

    def __enter__(self) -> None:
        if self.seed is None:
            return
        self._fork = torch.random.fork_rng(devices=self.devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)
            self._fork = None


def _progress(total: int, enabled: bool):
    if not enabled or total <= 1:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="segments", unit="seg", leave=False)
