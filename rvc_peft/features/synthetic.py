"""Test and benchmark audio with a known answer: harmonic voiced signals with a known F0, and espeak-ng speech.

``voiced_signal`` builds a harmonic tone (1/k amplitudes) whose instantaneous frequency follows a known
contour, with optional vibrato, unvoiced gaps and a little noise; it returns the audio and the true F0 at
100 frames/s (frame i = sample i * 160 at 16 kHz; 0 = unvoiced). ``espeak_speech`` renders text with the
``espeak-ng`` command when it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write

FRAME_RATE = 100  # f0 frames per second, as RVC (hop 160 at 16 kHz)


def voiced_signal(f0_hz: float | np.ndarray, duration: float, sample_rate: int = 16000,
                  vibrato_semitones: float = 0.5, harmonics: int | Sequence[float] = 8, seed: int = 0, *,
                  vibrato_rate: float = 5.5, unvoiced_gaps: Sequence[tuple[float, float]] = (),
                  noise_level: float = 0.003, peak: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A harmonic voiced signal with known F0.

    Args:
        f0_hz: a constant base F0 in Hz, or a contour at 100 fps (frame i at time i/100 s; 0 = unvoiced gap);
            a contour shorter than the signal holds its last value.
        duration: seconds.
        vibrato_semitones: sinusoidal vibrato depth (+- this many semitones) at ``vibrato_rate`` Hz.
        harmonics: number of harmonics with 1/k amplitudes, or explicit amplitudes (index 0 = fundamental);
            harmonics above Nyquist are dropped sample by sample.
        seed: seeds the harmonics' start phases and the background noise.
        unvoiced_gaps: ``(start_s, end_s)`` spans where the tone is off (noise only).
        noise_level: standard deviation of white background noise (relative to full scale).
        peak: peak amplitude of the voiced tone.
    Returns:
        ``(audio [round(duration * sample_rate)] float32, f0 [len(audio) * 100 // sample_rate] float32)``, the
        true F0 sampled at the start of each 10 ms frame (0 inside gaps).
    """
    n_samples = round(duration * sample_rate)
    if n_samples <= 0:
        raise ValueError(f"duration must give at least one sample, got {duration} s at {sample_rate} Hz")
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    if np.ndim(f0_hz) == 0:
        base = np.full(n_samples, float(f0_hz))
    else:
        contour = np.asarray(f0_hz, dtype=np.float64)
        if contour.ndim != 1 or contour.size == 0:
            raise ValueError(f"f0_hz contour must be a non-empty 1-D array, got shape {list(contour.shape)}")
        # piecewise-constant per frame keeps voiced/unvoiced edges sharp; frequencies are smoothed below
        base = contour[np.minimum((t * FRAME_RATE).astype(np.int64), contour.size - 1)]
    voiced = base > 0
    for start, end in unvoiced_gaps:
        voiced &= ~((t >= start) & (t < end))
    f0 = base * 2.0 ** (vibrato_semitones * np.sin(2 * np.pi * vibrato_rate * t) / 12.0)
    f0[~voiced] = 0.0

    amplitudes = (1.0 / np.arange(1, harmonics + 1) if isinstance(harmonics, (int, np.integer))
                  else np.asarray(harmonics, dtype=np.float64))
    # phase of the fundamental; unvoiced samples keep the last voiced frequency so phase stays continuous
    held = np.where(voiced, f0, 0.0)
    if voiced.any():
        last = np.maximum.accumulate(np.where(voiced, np.arange(n_samples), 0))
        held = f0[last]
        held[: np.argmax(voiced)] = f0[np.argmax(voiced)]
    phase = 2 * np.pi * np.cumsum(held) / sample_rate
    tone = np.zeros(n_samples)
    for k, amp in enumerate(amplitudes, start=1):
        below_nyquist = k * held < sample_rate / 2
        tone += amp * below_nyquist * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    # 5 ms raised-cosine ramps at voicing edges avoid clicks that would read as broadband onsets
    ramp = max(1, int(0.005 * sample_rate))
    envelope = np.convolve(voiced.astype(np.float64), np.hanning(2 * ramp + 1) / np.hanning(2 * ramp + 1).sum(),
                           mode="same")
    tone *= envelope
    if np.abs(tone).max() > 0:
        tone *= peak / np.abs(tone).max()
    audio = tone + noise_level * rng.standard_normal(n_samples)

    hop = sample_rate // FRAME_RATE
    truth = f0[np.arange(n_samples // hop) * hop]
    return audio.astype(np.float32), truth.astype(np.float32)


def espeak_speech(text: str, path: str | os.PathLike, voice: str = "en-us", pitch: int = 50, *, speed: int = 150,
                  sample_rate: int | None = None) -> Path | None:
    """Render ``text`` with espeak-ng to a WAV file; None when ``espeak-ng`` is not installed.

    espeak-ng writes 22050 Hz mono 16-bit audio; with ``sample_rate`` the file is resampled (soxr_hq) and
    rewritten as float32 WAV. ``pitch`` is espeak's 0-99 pitch setting (50 = default voice pitch). The file is
    written to a temporary name in the same folder and moved into place, so an existing file is never half
    overwritten. Raises ``RuntimeError`` (with espeak's stderr) if espeak-ng fails.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    path = Path(path)

    def render(tmp: Path) -> None:
        cmd = [exe, "-v", voice, "-p", str(int(pitch)), "-s", str(int(speed)), "-w", str(tmp), text]
        result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or os.path.getsize(tmp) <= 44:
            raise RuntimeError(f"espeak-ng failed for {path} (exit {result.returncode}): {result.stderr.strip()}")
        if sample_rate is not None:
            import librosa
            import soundfile as sf

            audio, native_rate = sf.read(tmp, dtype="float32")
            if audio.ndim == 2:
                audio = audio.mean(axis=1)
            if native_rate != sample_rate:
                audio = librosa.resample(audio, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq")
            sf.write(str(tmp), audio, sample_rate, subtype="FLOAT", format="WAV")

    atomic_write(path, render)
    return path
