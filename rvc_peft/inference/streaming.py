"""Streaming conversion: RVC's realtime-GUI algorithm (`gui_v1.py` + `tools/rvc_for_realtime.py`) on a `VoiceConverter`.

`StreamingConverter.process(block16k)` converts audio as it arrives and returns the converted audio a fixed delay
later. Per block of `block` seconds (everything in 10 ms frames: 160 samples at 16 kHz, `hop` samples out):

1. the 16 kHz input ring buffer `[extra | crossfade | sola_search | block]` shifts left by one block and the new
   block goes at its end (a causal 48 Hz high-pass runs first; offline uses the zero-phase one);
2. content features and pitch for the whole buffer, RVC's last-frame repeat (so ×2 frames cover the buffer),
   optional retrieval and consonant protection, exactly as offline;
3. the synthesizer decodes only the last `crossfade + sola_search + block` frames (`infer(..., skip_head=extra,
   return_length=...)`: the text encoder sees the whole buffer, the flow 24 more frames of left context);
4. optional loudness-envelope mix with the input (RVC realtime's 40 ms RMS frames, not offline's 1 s ones);
5. SOLA: the offset `k` in `[0, sola_search]` samples that maximises the normalised cross-correlation of the new
   audio with the previous block's unfaded tail; the first `crossfade` samples from `k` on are blended with that
   tail through sin²/cos² windows (they sum to 1), `block` samples are returned, and the next `crossfade` samples
   become the new tail.

Latency. The block returned for the input that just arrived starts `crossfade + sola_search - k` earlier in the
input, so the stream is delayed by `crossfade + sola_search` at most (minus the SOLA offset k); with
the wait for a full block, the algorithmic latency is `block + crossfade + sola_search` (RVC's GUI reports
`block + crossfade + 0.01 s`). Processing time adds to that; real time needs it below `block`.

What differs from `VoiceConverter.convert`: the features, pitch and (for utterance-normalised encoders such as the
voice lab's MFCCs) normalisation only see `extra + ...` seconds of past and no future; the newest frames lack right
context (the crossfade hides most of it); the output is clipped to [-1, 1] instead of peak-scaled over the file;
no quiet-point segmentation. `stream_file` removes the delay so its output lines up with the offline conversion.
Two deliberate differences from RVC's GUI: the crossfade is as long as asked (RVC blends at most 40 ms of it), and
pitch is analysed over the whole buffer (RVC analyses the newest block plus 50 ms and caches older frames).

Driving a stream from a file or from audio devices: `rvc_peft.inference.stream_io`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .audio_io import ConversionError, frame_rms
from .segmentation import HIGHPASS_HZ, HIGHPASS_ORDER, SAMPLE_RATE, WINDOW

if TYPE_CHECKING:
    from .pipeline import VoiceConverter

FRAME_SECONDS = WINDOW / SAMPLE_RATE  # 10 ms: the synthesizer's frame, the unit every streaming length is rounded to
ENCODER_MIN_SAMPLES = 400  # one content-encoder frame (25 ms at 16 kHz)
RMS_FRAMES = 4  # RVC realtime's loudness envelope: 4 frames (40 ms) long, hop one frame
STAGES = ("content_encoder", "pitch", "synthesizer")  # timed parts of a block (the rest: retrieval, SOLA, mixing)


# --- the two pieces of SOLA, usable on their own -------------------------------------------------------------------

def crossfade_windows(length: int) -> tuple[np.ndarray, np.ndarray]:
    """RVC realtime's crossfade: fade_in = sin²(π/2·t), fade_out = 1 - fade_in, t = linspace(0, 1, length).

    Returns (fade_in [length], fade_out [length]) float32; they sum to exactly 1 (equal-gain for identical signals).
    """
    t = np.linspace(0.0, 1.0, length, dtype=np.float64)
    fade_in = np.sin(0.5 * np.pi * t) ** 2
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


def sola_offset(head: np.ndarray, reference: np.ndarray, search: int) -> int:
    """The shift k in [0, search] at which `head[k : k+n]` best matches `reference` [n] (normalised correlation).

    score(k) = <head[k:k+n], reference> / sqrt(|head[k:k+n]|² + 1e-8), as RVC's `F.conv1d` pair; ties and an
    all-zero reference give 0. `head` needs at least n + search samples.
    """
    n = len(reference)
    if search < 0 or len(head) < n + search:
        raise ValueError(f"sola_offset needs search >= 0 and at least {n + search} head samples, got search={search} "
                         f"and {len(head)}")
    if n == 0 or search == 0:
        return 0
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(head[: n + search], dtype=np.float64), n)  # [s+1, n]
    numerator = frames @ np.asarray(reference, dtype=np.float64)
    denominator = np.sqrt(np.einsum("kn,kn->k", frames, frames) + 1e-8)
    return int(np.argmax(numerator / denominator))


# --- reaching into VoiceConverter -------------------------------------------------------------------------------------

def _retrieval_index(converter: VoiceConverter, index: Any, voice_index: Any) -> Any:
    """The index a conversion would use (argument, else the voice's, else the converter's), loaded and checked.

    Private API: `VoiceConverter._resolve_index` caches loaded `.index` files and checks their width; reused here so
    that streaming and offline conversion pick and load indexes the same way. Keep in step with pipeline.py.
    """
    return converter._resolve_index(index, voice_index)


# --- the streaming converter -------------------------------------------------------------------------------------------

@dataclass
class _Geometry:
    """Streaming lengths in 10 ms frames, as chosen (rounded) from the settings in seconds."""

    block: int
    extra: int
    crossfade: int
    search: int

    @property
    def window(self) -> int:  # frames in the input ring buffer
        return self.extra + self.crossfade + self.search + self.block

    @property
    def returned(self) -> int:  # frames the synthesizer decodes per block
        return self.crossfade + self.search + self.block


@dataclass
class StreamingReport:
    """Timing of a stream: settings, algorithmic latency and per-block processing time."""

    block_ms: float
    extra_ms: float
    crossfade_ms: float
    sola_search_ms: float
    algorithmic_latency_ms: float
    processing_ms: list[float] = field(default_factory=list, repr=False)
    stage_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0), repr=False)  # summed

    def as_dict(self) -> dict[str, Any]:
        """Settings, latency, processing time mean/p95/max per block (ms), the real-time factor (mean / block) and
        the mean per block of each stage (`stage_ms_mean`)."""
        times = np.asarray(self.processing_ms, dtype=np.float64)
        stats = {"processing_ms_mean": None, "processing_ms_p95": None, "processing_ms_max": None,
                 "real_time_factor": None, "stage_ms_mean": None}
        if times.size:
            stats = {"processing_ms_mean": round(float(times.mean()), 3),
                     "processing_ms_p95": round(float(np.percentile(times, 95)), 3),
                     "processing_ms_max": round(float(times.max()), 3),
                     "real_time_factor": round(float(times.mean()) / self.block_ms, 4),
                     "stage_ms_mean": {k: round(v / times.size, 3) for k, v in self.stage_ms.items()}}
        return {"block_ms": self.block_ms, "extra_ms": self.extra_ms, "crossfade_ms": self.crossfade_ms,
                "sola_search_ms": self.sola_search_ms, "algorithmic_latency_ms": self.algorithmic_latency_ms,
                "blocks": len(self.processing_ms), **stats}


class StreamingConverter:
    """Convert a 16 kHz audio stream block by block with a `VoiceConverter`'s models (see the module docstring).

    Args:
        converter: the `VoiceConverter` whose content encoder, pitch method, voices and index are used.
        block_seconds: audio per step; every length is rounded to 10 ms.
        extra_seconds: past context the features and the synthesizer's text encoder see (RVC GUI: 2.5 s on GPU).
        crossfade_seconds: SOLA crossfade between consecutive blocks (at most `block_seconds`).
        sola_search_seconds: how far SOLA may shift a block to line it up (RVC: 0.01 s).
        voice, f0_up_key, index, index_rate, protect, rms_mix_rate, filter_radius, f0_method, speaker_id: as
            `VoiceConverter.convert`; `rms_mix_rate` mixes RVC realtime's 40 ms envelope (1 = off).
        highpass: run RVC's 48 Hz Butterworth high-pass causally on the input.

    `process(chunk)` takes any number of new samples (float [n] at 16 kHz) and returns the converted audio of every
    block completed so far (float32 [k · output_block_samples] at `sample_rate`); `flush()` ends the stream.
    """

    def __init__(
        self,
        converter: VoiceConverter,
        *,
        block_seconds: float = 0.5,
        extra_seconds: float = 1.0,
        crossfade_seconds: float = 0.05,
        sola_search_seconds: float = 0.01,
        voice: str | None = None,
        f0_up_key: float = 0.0,
        index: Any = None,
        index_rate: float = 0.75,
        protect: float = 0.33,
        rms_mix_rate: float = 1.0,
        filter_radius: int = 3,
        f0_method: str | Callable[[np.ndarray, int], np.ndarray] | None = None,
        speaker_id: int | None = None,
        highpass: bool = True,
    ) -> None:
        from ..features.pitch import F0_METHODS

        self.converter = converter
        self.geometry = _geometry(block_seconds, extra_seconds, crossfade_seconds, sola_search_seconds)
        checks = [
            (math.isfinite(f0_up_key), f"f0_up_key must be a finite number of semitones, got {f0_up_key}"),
            (0 <= index_rate <= 1, f"index_rate must be in [0, 1], got {index_rate}"),
            (0 <= protect <= 0.5, f"protect must be in [0, 0.5] (0.5 disables it), got {protect}"),
            (0 <= rms_mix_rate <= 1, f"rms_mix_rate must be in [0, 1] (1 = off), got {rms_mix_rate}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        method = f0_method if f0_method is not None else converter.f0_method
        if not callable(method) and method not in F0_METHODS:
            raise ValueError(f"unknown f0 method {method!r}; known methods: {', '.join(F0_METHODS)}")
        self.f0_method = method
        self.f0_up_key, self.index_rate, self.protect = float(f0_up_key), float(index_rate), float(protect)
        self.rms_mix_rate, self.filter_radius = float(rms_mix_rate), int(filter_radius)
        self.voice = converter.voices.resolve(voice)  # raises VoiceError naming the loaded voices
        info = converter.voices.voice(self.voice) if self.voice is not None else None
        sid = speaker_id if speaker_id is not None else (
            info.speaker_id if info is not None and info.speaker_id is not None else converter.default_speaker_id)
        if not 0 <= int(sid) < converter.config.spk_embed_dim:
            raise ValueError(f"speaker id {sid} is out of range; this model has {converter.config.spk_embed_dim} "
                             "speaker rows")
        self.speaker_id = int(sid)
        self.index = _retrieval_index(converter, index, info.index if info is not None else None)
        self.highpass = highpass
        self.hop = int(converter.config.hop_length)
        if self.hop * 100 != converter.sample_rate:
            raise ValueError(f"streaming needs 100 synthesizer frames per second; this model has hop {self.hop} at "
                             f"{converter.sample_rate} Hz")
        self.fade_in, self.fade_out = crossfade_windows(self.geometry.crossfade * self.hop)
        self.reset()

    @classmethod
    def from_converter(cls, converter: VoiceConverter, **settings: Any) -> StreamingConverter:
        """`StreamingConverter(converter, **settings)`; what `VoiceConverter.stream(**settings)` returns."""
        return cls(converter, **settings)

    # --- sizes --------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Output sample rate (the synthesizer's)."""
        return self.converter.sample_rate

    @property
    def input_block_samples(self) -> int:
        return self.geometry.block * WINDOW

    @property
    def output_block_samples(self) -> int:
        return self.geometry.block * self.hop

    @property
    def output_delay_samples(self) -> int:
        """Output samples before the one that stands for input sample 0: `crossfade + sola_search / 2`.

        A block's delay is `crossfade + sola_search - k` for its SOLA offset k in [0, sola_search]; the middle keeps
        the error within ±sola_search/2 (on speech this lined streamed and offline output up best).
        """
        return self.geometry.crossfade * self.hop + self.geometry.search * self.hop // 2

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency: the wait for a block plus the stream delay (`block + crossfade + sola_search`)."""
        g = self.geometry
        return round((g.block + g.crossfade + g.search) * FRAME_SECONDS, 6)

    # --- streaming ----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new stream: silent buffers, fresh filter state, the converter's seed again, empty report."""
        from scipy import signal

        g = self.geometry
        self._window = np.zeros(g.window * WINDOW, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._tail = np.zeros(g.crossfade * self.hop, dtype=np.float32)  # the previous block's unfaded continuation
        self._sos = signal.butter(HIGHPASS_ORDER, HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE, output="sos")
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._received = 0
        self._emitted = 0
        self._ended = False
        self.last_offsets: list[int] = []
        self.report = StreamingReport(g.block * 10.0, g.extra * 10.0, g.crossfade * 10.0, g.search * 10.0,
                                      round(self.latency_seconds * 1000, 3))
        self._rng = _StreamRng(self.converter.seed, self.converter.device)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """New input samples (float [n], 16 kHz, any n) -> float32 [k · output_block_samples] for the k blocks that
        are now complete (k may be 0)."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.floating):
            raise ValueError(f"process() takes mono float samples [n] at 16 kHz, got {chunk.dtype} of shape "
                             f"{list(chunk.shape)}")
        if not np.isfinite(chunk).all():
            raise ValueError("process() got NaN or infinite samples")
        if self._ended:
            self.reset()
        self._received += len(chunk)
        self._pending = np.concatenate([self._pending, chunk.astype(np.float32)])
        outputs = []
        block = self.input_block_samples
        while len(self._pending) >= block:
            outputs.append(self._step(self._pending[:block]))
            self._pending = self._pending[block:]
        return np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End the stream: pad the last partial block with silence and feed silent blocks until the output covers
        every input sample plus the delay; return that output. The next `process` starts a new stream (the report
        and `last_offsets` of this one stay until then)."""
        needed = math.ceil(self._received * self.sample_rate / SAMPLE_RATE) + self.output_delay_samples
        block = self.input_block_samples
        outputs = []
        if len(self._pending):
            outputs.append(self._step(np.pad(self._pending, (0, block - len(self._pending)))))
            self._pending = self._pending[:0]
        while self._emitted < needed:
            outputs.append(self._step(np.zeros(block, dtype=np.float32)))
        self._ended = True
        return np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.float32)

    # --- one block ----------------------------------------------------------------------------------------------
    def _step(self, block16k: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        if self.highpass:
            from scipy import signal

            block16k, self._zi = signal.sosfilt(self._sos, block16k.astype(np.float64), zi=self._zi)
        n = len(block16k)
        self._window[:-n] = self._window[n:]
        self._window[-n:] = block16k
        audio = self._rng.run(self._infer_window)  # [returned · hop]
        if self.rms_mix_rate < 1:
            audio = self._mix_envelope(audio)
        cross, search = len(self._tail), self.geometry.search * self.hop
        offset = sola_offset(audio[: cross + search], self._tail, search)
        audio = audio[offset:]
        out = audio[: self.output_block_samples].copy()
        out[:cross] = out[:cross] * self.fade_in + self._tail * self.fade_out
        self._tail = audio[self.output_block_samples : self.output_block_samples + cross].copy()
        self.last_offsets.append(offset)
        self._emitted += len(out)
        self.report.processing_ms.append(1000 * (time.perf_counter() - started))
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    @torch.no_grad()
    def _infer_window(self) -> np.ndarray:
        """Features and pitch of the whole ring buffer; synthesizer output of its last `returned` frames."""
        converter, g = self.converter, self.geometry
        config, device = converter.config, converter.device
        encoder_dtype = next(converter.content_encoder.parameters()).dtype
        wav = torch.from_numpy(self._window).to(device, encoder_dtype)[None]
        started = time.perf_counter()
        feats = converter.content_encoder(wav)  # [1, F, E] at 50 fps
        self._timed("content_encoder", started)
        if feats.shape[-1] != config.content_dim:
            raise ConversionError("<stream>", f"the content encoder gives {feats.shape[-1]}-d features; this "
                                              f"{config.version} model reads {config.content_dim}-d ones")
        feats = torch.cat([feats, feats[:, -1:]], dim=1)  # RVC realtime: repeat the last frame so 2F >= frames
        protecting = self.protect < 0.5 and config.use_f0
        feats0 = feats.clone() if protecting else None
        if self.index is not None and self.index_rate != 0:
            blended = self.index.blend(feats[0].float().cpu().numpy(), self.index_rate)
            feats = torch.from_numpy(np.ascontiguousarray(blended, dtype=np.float32)).to(device, feats.dtype)[None]
        frames = g.window
        feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)[:, :frames]  # [1, T, E]
        kwargs: dict[str, Any] = {"sid": torch.tensor([self.speaker_id], device=device)}
        if config.use_f0:
            started = time.perf_counter()
            coarse, f0 = self._window_pitch(frames)
            self._timed("pitch", started)
            pitchf = torch.from_numpy(f0).to(device)[None]
            kwargs.update(pitch=torch.from_numpy(coarse).to(device)[None], nsff0=pitchf)
            if protecting:
                feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)[:, :frames]
                weight = torch.where(pitchf > 0, 1.0, self.protect)
                weight = torch.where(pitchf < 1, self.protect, weight).to(feats.dtype)[:, :, None]
                feats = (feats * weight + feats0 * (1 - weight)).to(feats0.dtype)
        converter.voices.activate(self.voice, merge=converter.merge_single_voice)
        synth_dtype = next(converter.voices.synthesizer.parameters()).dtype
        started = time.perf_counter()
        # through the converter's backend ("torch", "torch-fast" or "onnx"), one voice per window
        audio = converter.backend.infer(converter.voices, feats.to(synth_dtype), None,
                                        phone_lengths=torch.tensor([frames], device=device), skip_head=g.extra,
                                        return_length=g.returned, **kwargs)
        audio = audio[0, 0].float().cpu().numpy()[: g.returned * self.hop]
        self._timed("synthesizer", started)
        return audio

    def _timed(self, stage: str, started: float) -> None:
        self.report.stage_ms[stage] += 1000 * (time.perf_counter() - started)

    def _window_pitch(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Pitch of the ring buffer with the key shift: (coarse int64 [frames], Hz float32 [frames])."""
        from ..features.pitch import PitchError, extract_f0, f0_to_coarse

        audio = self._window.astype(np.float64)
        if callable(self.f0_method):
            f0 = np.asarray(self.f0_method(audio, frames), dtype=np.float64).reshape(-1) * 2 ** (self.f0_up_key / 12)
        else:
            try:
                f0 = extract_f0(audio, self.f0_method, p_len=frames, f0_up_key=self.f0_up_key,
                                filter_radius=self.filter_radius, rmvpe_model=self.converter.rmvpe_model,
                                device=str(self.converter.device))
            except PitchError as err:
                raise ConversionError("<stream>", f"pitch extraction failed: {err}") from err
        f0 = np.pad(f0[:frames], (0, max(0, frames - len(f0)))).astype(np.float32)
        return f0_to_coarse(f0), f0

    def _mix_envelope(self, audio: np.ndarray) -> np.ndarray:
        """RVC realtime's RMS mix: output · (rms_in / max(rms_out, 1e-3))^(1 - rate), 40 ms frames, 10 ms hop."""
        source = self._window[self.geometry.extra * WINDOW :]
        positions = np.linspace(0.0, 1.0, len(audio))

        def envelope(signal: np.ndarray, hop: int) -> np.ndarray:
            rms = frame_rms(signal, RMS_FRAMES * hop, hop)
            return np.interp(positions, np.linspace(0.0, 1.0, len(rms)), rms)

        gain = (envelope(source, WINDOW) / np.maximum(envelope(audio, self.hop), 1e-3)) ** (1 - self.rms_mix_rate)
        return (audio * gain).astype(np.float32)


def _geometry(block: float, extra: float, crossfade: float, search: float) -> _Geometry:
    values = {"block_seconds": block, "extra_seconds": extra, "crossfade_seconds": crossfade,
              "sola_search_seconds": search}
    for name, value in values.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    frames = {name: round(value / FRAME_SECONDS) for name, value in values.items()}
    if frames["block_seconds"] < 1:
        raise ValueError(f"block_seconds must be at least 0.01 s (one 10 ms frame), got {block}")
    if frames["crossfade_seconds"] < 1:
        raise ValueError(f"crossfade_seconds must be at least 0.01 s (SOLA aligns on the crossfade), got {crossfade}")
    if frames["crossfade_seconds"] > frames["block_seconds"]:
        raise ValueError(f"crossfade_seconds ({crossfade}) must not exceed block_seconds ({block}): the crossfade "
                         "is part of each block")
    geometry = _Geometry(frames["block_seconds"], frames["extra_seconds"], frames["crossfade_seconds"],
                         frames["sola_search_seconds"])
    if geometry.window * WINDOW < ENCODER_MIN_SAMPLES:
        raise ValueError(f"the input window (extra + crossfade + sola search + block = {geometry.window * 10} ms) is "
                         f"shorter than one content-encoder frame ({ENCODER_MIN_SAMPLES / 16} ms); raise "
                         "extra_seconds")
    return geometry


class _StreamRng:
    """The stream's own torch RNG state (seeded from the converter's seed): the synthesizer's noise is reproducible
    per stream and never disturbs the caller's RNG. seed None: torch's global RNG, as `convert`."""

    def __init__(self, seed: int | None, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.state: list[torch.Tensor] | None = None
        if seed is not None:
            with torch.random.fork_rng(devices=self.devices):
                torch.manual_seed(seed)
                self.state = self._get()

    def _get(self) -> list[torch.Tensor]:
        return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in self.devices]

    def run(self, function: Callable[[], np.ndarray]) -> np.ndarray:
        if self.state is None:
            return function()
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.state[0])
            for d, state in zip(self.devices, self.state[1:]):
                torch.cuda.set_rng_state(state, d)
            result = function()
            self.state = self._get()
        return result
