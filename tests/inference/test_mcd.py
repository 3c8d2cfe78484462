"""Mel-cepstral distortion: the warping against SPTK's recursion, the features against an independent computation
(log spectrum resampled on the warped frequency axis + cosine transform), and plausible values on real speech."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rvc_peft.features.audio import resample
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import evaluate
from rvc_peft.inference.evaluation import MCEP_ALPHA, freqt, mel_cepstrum, mel_cepstrum_from_power

ALPHA = 0.42
ORDER = 24


def sptk_freqt(c1: np.ndarray, m2: int, a: float) -> np.ndarray:
    """SPTK's `freqt` recursion, one coefficient at a time (a cascade of all-pass sections fed from the end)."""
    b = 1 - a * a
    g = np.zeros(m2 + 1)
    for i in range(len(c1) - 1, -1, -1):
        d = g.copy()
        g[0] = c1[i] + a * d[0]
        if m2 >= 1:
            g[1] = b * d[0] + a * d[1]
        for j in range(2, m2 + 1):
            g[j] = d[j - 1] + a * (d[j] - g[j - 1])
    return g


def warp(omega: np.ndarray, alpha: float) -> np.ndarray:
    """Phase response of the first-order all-pass: the mel-like frequency axis (alpha < 0 maps back)."""
    return omega + 2 * np.arctan(alpha * np.sin(omega) / (1 - alpha * np.cos(omega)))


def independent_mel_cepstra(audio: np.ndarray, grid: int = 4096) -> np.ndarray:
    """c1..c24 by numerical integration: ln|X| sampled on a uniform grid of the *warped* axis, cosine transform.

    Frames as the library's (25 ms periodic Blackman, centred every 10 ms, zero padding, FFT 1024), but the
    cepstrum is computed from the definition `ln|X(ω(ω̃))| = c0 + Σ c_m cos(m ω̃)` instead of SPTK's recursion.
    """
    hop, win, n_fft = 160, 400, 1024
    padded = np.pad(audio.astype(np.float64), (win // 2, win // 2))
    count = 1 + len(audio) // hop
    padded = np.pad(padded, (0, max(0, (count - 1) * hop + win - len(padded))))
    frames = np.stack([padded[t * hop : t * hop + win] for t in range(count)])
    window = np.blackman(win + 1)[:-1]  # periodic, like scipy's get_window(..., fftbins=True)
    log_amplitude = 0.5 * np.log(np.maximum(np.abs(np.fft.rfft(frames * window, n=n_fft)) ** 2, 1e-10))
    bins = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    warped = np.pi * (np.arange(grid) + 0.5) / grid  # midpoints of [0, π] on the warped axis
    linear = warp(warped, -ALPHA)
    sampled = np.stack([np.interp(linear, bins, frame) for frame in log_amplitude])  # [T, grid]
    cosines = np.cos(np.outer(np.arange(1, ORDER + 1), warped))  # [24, grid]
    return 2.0 / grid * sampled @ cosines.T


def independent_mcd(converted: np.ndarray, reference: np.ndarray) -> float:
    a, b = independent_mel_cepstra(converted), independent_mel_cepstra(reference)
    n = min(len(a), len(b))
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * ((a[:n] - b[:n]) ** 2).sum(axis=1))))


def test_freqt_equals_sptk_recursion():
    rng = np.random.default_rng(0)
    for length in (1, 2, 30, 513):
        c = rng.standard_normal(length) / (1 + np.arange(length))
        for order in (0, 1, 5, ORDER):
            np.testing.assert_allclose(freqt(c, order, ALPHA), sptk_freqt(c, order, ALPHA), rtol=0, atol=1e-12)
    assert MCEP_ALPHA == ALPHA
    np.testing.assert_allclose(freqt(c, ORDER, 0.0), c[: ORDER + 1], atol=1e-15)  # α = 0: no warping


def test_a_known_mel_cepstrum_is_recovered_from_its_spectrum():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal((3, ORDER + 1)) * 0.5 / (1 + np.arange(ORDER + 1))
    omega = 2 * np.pi * np.arange(513) / 1024
    log_amplitude = truth @ np.cos(np.outer(np.arange(ORDER + 1), warp(omega, ALPHA)))  # [3, 513]
    recovered = mel_cepstrum_from_power(np.exp(2 * log_amplitude))
    np.testing.assert_allclose(recovered, truth, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2 bins"):
        mel_cepstrum_from_power(np.ones((4, 1)))


@pytest.mark.parametrize(("f0_a", "f0_b", "seed"), [(120.0, 210.0, 3), (180.0, 190.0, 4)])
def test_mcd_matches_an_independent_computation(f0_a, f0_b, seed):
    a, _ = voiced_signal(f0_a, 1.2, seed=seed, unvoiced_gaps=[(0.4, 0.6)])
    b, _ = voiced_signal(f0_b, 1.2, seed=seed + 10)
    library = evaluate((a, 16000), (b, 16000), align="none")["mcd_db"]
    assert library == pytest.approx(independent_mcd(a, b), rel=0.05)
    assert mel_cepstrum(a)[:, 1:] == pytest.approx(independent_mel_cepstra(a), abs=0.05)


# -- real speech: two espeak-ng voices read the same sentence --------------------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def espeak_pair() -> tuple[np.ndarray, np.ndarray]:
    from rvc_peft.lab.corpus import VOICES

    clips = []
    for name in ("espeak-en-us-m1", "espeak-en-us-f2"):
        reason = VOICES[name].unavailable_reason()
        if reason is not None:
            pytest.skip(f"{name}: {reason}")
        audio, rate = VOICES[name].synthesize(SENTENCE)
        clips.append(resample(np.asarray(audio, dtype=np.float32), rate, 16000))
    return clips[0], clips[1]


def test_speech_mcd_lands_in_the_usual_ranges(espeak_pair):
    male, female = espeak_pair
    same = evaluate((male, 16000), (male, 16000))["mcd_db"]
    speakers = evaluate((female, 16000), (male, 16000))["mcd_db"]
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(male)).astype(np.float32)
    noisy = evaluate((noise, 16000), (male, 16000))["mcd_db"]
    assert same == pytest.approx(0.0, abs=1e-9)
    assert 4.0 < speakers < 15.0  # two speakers, same text: the usual inter-speaker range
    assert noisy > speakers + 2.0
    # the same recording quieter and through a gentle tilt (a first-order filter, ±2.3 dB): a small distortion
    tilted = (0.5 * (male + 0.3 * np.concatenate([[0.0], male[:-1]]))).astype(np.float32)
    assert 0.3 < evaluate((tilted, 16000), (male, 16000))["mcd_db"] < 3.0
    assert speakers == pytest.approx(independent_mcd_dtw(female, male), rel=0.05)


def independent_mcd_dtw(converted: np.ndarray, reference: np.ndarray) -> float:
    """MCD of the independent features over a plain dynamic-programming DTW of those features."""
    a, b = independent_mel_cepstra(converted), independent_mel_cepstra(reference)
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):  # row by row, vectorised along j where the recursion allows it
        diagonal_or_up = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:]) + cost[i - 1]
        row = acc[i]
        for j in range(1, m + 1):
            row[j] = min(diagonal_or_up[j - 1], row[j - 1] + cost[i - 1, j - 1])
    i, j, steps = n, m, []
    while (i, j) != (1, 1):
        steps.append(cost[i - 1, j - 1])
        i, j = min(((i - 1, j - 1), (i, j - 1), (i - 1, j)), key=lambda s: acc[s])
    steps.append(cost[0, 0])
    return float(10 / math.log(10) * math.sqrt(2) * np.mean(steps))
