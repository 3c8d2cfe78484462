"""Reading and writing audio files: any channel count and bit depth in, float32 mono out.

Decoding goes through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1, AIFF ...).
When libsndfile cannot decode a file (an old libsndfile and an MP3, or an M4A) and an `ffmpeg` executable is
on PATH, ffmpeg converts it to a temporary float32 WAV first. Resampling always uses
`librosa.resample(res_type="soxr_hq")` (RVC's current code; RVC's 2023 release used ffmpeg's resampler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..utils.files import atomic_write

# Extensions the dataset builder treats as audio when it scans a folder (other files are reported, not read).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".m4a", ".aac", ".wma")


class AudioReadError(ValueError):
    """A file could not be turned into usable audio. `path` and `reason` are kept for summaries."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _decode_with_ffmpeg(path: Path, soundfile_error: str) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioReadError(
            path,
            f"cannot decode ({soundfile_error}); libsndfile {sf.__libsndfile_version__} does not read this format "
            "and no ffmpeg executable was found (install ffmpeg, or convert the file to WAV/FLAC)",
        )
    fd, tmp_name = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        # Keep the native rate and channels; mixing and resampling happen below like for every other file.
        done = subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(path), "-f", "wav", "-acodec", "pcm_f32le", tmp_name],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise AudioReadError(path, f"not a readable audio file (soundfile: {soundfile_error}; ffmpeg: {message})")
        data, rate = sf.read(tmp_name, dtype="float32", always_2d=True)
        return data, rate
    finally:
        os.unlink(tmp_name)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode `path` to `(audio [L] float32 mono, native sample rate)`.

    Channels are averaged (RVC: ffmpeg `-ac 1`). Raises `AudioReadError` for a missing, undecodable or empty
    file and for NaN/infinite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioReadError(path, "file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = str(getattr(error, "error_string", "") or error).strip() or type(error).__name__
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            raise AudioReadError(path, f"not a recognised audio file ({reason})") from None
        data, rate = _decode_with_ffmpeg(path, reason)
    if data.size == 0:
        raise AudioReadError(path, "contains no audio samples")
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise AudioReadError(path, f"contains {bad} NaN or infinite samples")
    return np.ascontiguousarray(mono), int(rate)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """`audio [L]` at `orig_sr` -> float32 `[round(L·target/orig)]` at `target_sr` (soxr high quality)."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return audio
    import librosa  # imported here: librosa's import costs about a second

    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read any supported file as float32 mono `[L]` at `sample_rate` (raises `AudioReadError`)."""
    audio, rate = read_audio(path)
    return resample(audio, rate, sample_rate)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write `audio [L]` (or `[L, C]`) as a float32 WAV atomically (temp file in the same folder, then rename)."""
    data = np.asarray(audio, dtype=np.float32)
    atomic_write(path, lambda tmp: sf.write(str(tmp), data, int(sample_rate), format="WAV", subtype="FLOAT"))
