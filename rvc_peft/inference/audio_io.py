"""Audio in and out of a conversion: input checks and peak limiting, RMS envelope mixing, output scaling, WAV files.

Each function is one step of RVC WebUI's pipeline (spec §4.1, §4.3 step 7, §4.7) with its own tests.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.files import atomic_write
from .segmentation import SAMPLE_RATE

INPUT_PEAK = 0.95  # RVC scales louder input down to this peak before anything else
OUTPUT_PEAK = 0.99  # and the output down to this one
MIN_SAMPLES_16K = 400  # the content encoder needs 25 ms for one frame; shorter audio gives no output at all

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor | tuple


class ConversionError(ValueError):
    """Input or settings that cannot be converted; the message names the input (file name or "<array>")."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class AudioTooShortError(ConversionError):
    """Audio shorter than the 25 ms the content encoder needs for one frame."""


# --- audio in / out ---------------------------------------------------------------------------------------------

def _integer_to_float(audio: np.ndarray) -> np.ndarray:
    if audio.dtype == np.uint8:  # 8-bit WAV/PCM is unsigned with its zero at 128
        return (audio.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(audio.dtype, np.integer):
        return audio.astype(np.float32) / float(2 ** (8 * audio.dtype.itemsize - 1))
    return audio.astype(np.float32)


def prepare_audio(audio_or_path: AudioInput, input_sample_rate: int | None = None) -> tuple[np.ndarray, str]:
    """Any supported input -> (mono float32 [L] at 16 kHz, peak-limited to 0.95 as RVC; a name for messages).

    Accepts a file path (anything `rvc_peft.features.audio.load_audio` reads), a numpy/torch array `[L]`, `[L, C]`
    or `[C, L]` (C ≤ 8 channels, averaged) of float or integer PCM (uint8 is 8-bit unsigned), or an
    `(array, sample_rate)` tuple. Arrays without a rate are taken as 16 kHz unless `input_sample_rate` says otherwise.
    Raises `ConversionError` (or `rvc_peft.features.audio.AudioReadError` for files) naming the input.
    """
    from ..features.audio import load_audio, resample

    if isinstance(audio_or_path, (str, os.PathLike)):
        name = str(audio_or_path)
        audio = load_audio(audio_or_path, SAMPLE_RATE)
    else:
        name = "<array>"
        if isinstance(audio_or_path, tuple):
            if len(audio_or_path) != 2:
                raise ConversionError(name, "a tuple input must be (audio, sample_rate)")
            audio_or_path, input_sample_rate = audio_or_path
        if torch.is_tensor(audio_or_path):
            audio_or_path = audio_or_path.detach().cpu().numpy()
        audio = np.asarray(audio_or_path)
        if audio.dtype == np.bool_ or not (np.issubdtype(audio.dtype, np.number)):
            raise ConversionError(name, f"audio must be numeric samples, got dtype {audio.dtype}")
        if np.iscomplexobj(audio):
            raise ConversionError(name, "audio must be real-valued, got complex samples")
        audio = _integer_to_float(audio)
        if audio.ndim == 2:
            if audio.shape[1] <= 8 and audio.shape[0] > audio.shape[1]:
                audio = audio.mean(axis=1)
            elif audio.shape[0] <= 8 and audio.shape[1] > audio.shape[0]:
                audio = audio.mean(axis=0)
            else:
                raise ConversionError(name, f"cannot tell channels from samples in an array of shape {audio.shape}")
        elif audio.ndim != 1:
            raise ConversionError(name, f"expected mono [samples] or [samples, channels] audio, got shape {audio.shape}")
        if audio.size == 0:
            raise ConversionError(name, "contains no audio samples")
        bad = int((~np.isfinite(audio)).sum())
        if bad:
            raise ConversionError(name, f"contains {bad} NaN or infinite samples")
        rate = SAMPLE_RATE if input_sample_rate is None else int(input_sample_rate)
        if rate <= 0:
            raise ConversionError(name, f"invalid sample rate {input_sample_rate}")
        audio = resample(np.ascontiguousarray(audio, dtype=np.float32), rate, SAMPLE_RATE)
    if len(audio) < MIN_SAMPLES_16K:
        raise AudioTooShortError(
            name, f"audio is {len(audio) / SAMPLE_RATE:.4f} s long; at least {MIN_SAMPLES_16K / SAMPLE_RATE} s "
            "(one content-encoder frame) is needed")
    peak = float(np.abs(audio).max()) / INPUT_PEAK
    if peak > 1:
        audio = audio / peak
    return audio.astype(np.float32), name


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16", *,
                overwrite: bool = True, avoid: Collection[str | os.PathLike] = ()) -> Path:
    """Write converted audio atomically (temp file in the same folder, then rename). Returns the path written.

    `subtype="PCM_16"` writes RVC WebUI's file: samples × 32768 cast to int16 (audio from `convert` already peaks at
    ≤ 0.99). `"FLOAT"` writes float32 as Applio does. The format follows the extension (.wav, .flac, .ogg).
    `overwrite=False` never replaces a file: the audio goes to the first free name of `path`, "stem (1).wav", ...
    (not one in `avoid`), claimed when the file is complete, and that path is returned (see
    `rvc_peft.utils.files.atomic_write`). A full disk raises `DiskFullError` naming `path`.
    """
    import soundfile as sf

    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if subtype == "PCM_16":
        data: np.ndarray = np.clip(audio * 32768.0, -32768, 32767).astype(np.int16)
    elif subtype == "FLOAT":
        data = audio
    else:
        raise ValueError(f"subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}")
    fmt = {".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower(), "WAV")
    if fmt != "WAV" and subtype == "FLOAT":
        subtype = "PCM_24" if fmt == "FLAC" else "VORBIS"
    if fmt == "OGG":
        subtype = "VORBIS"
    return atomic_write(path, lambda tmp: sf.write(str(tmp), data, int(sample_rate), format=fmt, subtype=subtype),
                        overwrite=overwrite, avoid=avoid)


# --- signal helpers ------------------------------------------------------------------------------------------------

def frame_rms(signal: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """`librosa.feature.rms(y=signal, frame_length, hop_length)[0]` (centred, zero-padded, float32 power).

    Written with numpy: librosa's first `feature.rms` call costs seconds of imports and JIT compilation.
    -> [1 + len // hop_length]
    """
    padded = np.pad(np.asarray(signal), (frame_length // 2, frame_length // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length].T  # [frame, n]
    return np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=0))


def rms_mix(source16k: np.ndarray, output: np.ndarray, output_sr: int, rate: float) -> np.ndarray:
    """RVC's `change_rms`: give `output` the loudness envelope of `source16k`, by `1 - rate`.

    RMS per half second (`frame_rms`, frame = 1 s, hop = 0.5 s at each signal's rate), both envelopes linearly
    interpolated to the output length (torch, align_corners=False), output envelope floored at 1e-6;
    `output · rms_in^(1-rate) · rms_out^(rate-1)`. rate 1 leaves the output unchanged. -> float32 [len(output)]
    """

    def envelope(signal: np.ndarray, sr: int) -> torch.Tensor:
        rms = frame_rms(signal, sr // 2 * 2, sr // 2)[None, None]  # [1, 1, frames]
        return F.interpolate(torch.from_numpy(rms), size=len(output), mode="linear").squeeze()

    rms_in = envelope(source16k, SAMPLE_RATE)
    rms_out = torch.clamp(envelope(output, output_sr), min=1e-6)
    gain = torch.pow(rms_in, torch.tensor(1 - rate)) * torch.pow(rms_out, torch.tensor(rate - 1))
    return (output * gain.numpy()).astype(np.float32)


def scale_peak(audio: np.ndarray, peak: float = OUTPUT_PEAK) -> np.ndarray:
    """Divide by `max|x| / peak` when that exceeds 1 (RVC's final limiter; Applio's float output)."""
    m = float(np.abs(audio).max()) / peak if audio.size else 0.0
    return (audio / m).astype(np.float32) if m > 1 else audio.astype(np.float32)
