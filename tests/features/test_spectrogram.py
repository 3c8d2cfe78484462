"""RVC's linear/mel spectrograms against an independent librosa + numpy computation."""

import librosa
import numpy as np
import pytest
import torch

from rvc_peft.features.spectrogram import (
    linear_spectrogram,
    mel_from_config,
    mel_spectrogram,
    spec_to_mel,
    spectrogram_from_config,
)
from rvc_peft.models.config import RVCConfig

# (sampling rate, n_fft, hop, win, n_mels) from RVC's configs
RVC_PARAMS = [(32000, 1024, 320, 1024, 80), (40000, 2048, 400, 2048, 125), (48000, 2048, 480, 2048, 128)]


def _reference(y: np.ndarray, sr: int, n_fft: int, hop: int, win: int, n_mels: int):
    """librosa STFT on RVC's reflect padding, magnitude with the 1e-6 floor, Slaney mel, log clamp."""
    pad = (n_fft - hop) // 2
    padded = np.pad(y.astype(np.float64), pad, mode="reflect")
    stft = librosa.stft(padded, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=False)
    magnitude = np.sqrt(np.abs(stft) ** 2 + 1e-6)
    mel = np.log(np.maximum(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) @ magnitude, 1e-5))
    return magnitude, mel


def _signal(sr: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(sr)
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize(("sr", "n_fft", "hop", "win", "n_mels"), RVC_PARAMS)
def test_linear_and_mel_match_librosa(sr, n_fft, hop, win, n_mels):
    y = _signal(sr)
    magnitude, mel = _reference(y, sr, n_fft, hop, win, n_mels)
    batch = torch.from_numpy(np.stack([y, y[::-1].copy()]))
    spec = linear_spectrogram(batch, n_fft, hop, win)
    assert spec.shape == (2, n_fft // 2 + 1, len(y) // hop)
    np.testing.assert_allclose(spec[0].numpy(), magnitude, rtol=1e-4, atol=1e-4)
    ours_mel = mel_spectrogram(batch, n_fft, n_mels, sr, hop, win)
    assert ours_mel.shape == (2, n_mels, len(y) // hop)
    np.testing.assert_allclose(ours_mel[0].numpy(), mel, rtol=1e-4, atol=2e-4)
    # the second clip is computed independently of the first
    np.testing.assert_allclose(spec[1].numpy(), _reference(y[::-1].copy(), sr, n_fft, hop, win, n_mels)[0],
                               rtol=1e-4, atol=1e-4)


def test_shorter_window_and_fmax_match_librosa():
    sr, n_fft, hop, win, n_mels = 16000, 512, 160, 400, 40
    y = _signal(sr, 0.3)
    pad = (n_fft - hop) // 2
    stft = librosa.stft(np.pad(y.astype(np.float64), pad, mode="reflect"), n_fft=n_fft, hop_length=hop,
                        win_length=win, window="hann", center=False)
    magnitude = np.sqrt(np.abs(stft) ** 2 + 1e-6)
    expected = np.log(np.maximum(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=50, fmax=7000)
                                 @ magnitude, 1e-5))
    ours = spec_to_mel(linear_spectrogram(torch.from_numpy(y), n_fft, hop, win), n_fft, n_mels, sr, 50, 7000)
    assert ours.shape == (n_mels, len(y) // hop)  # unbatched in, unbatched out
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=2e-4)


def test_config_helpers_use_the_presets():
    config = RVCConfig.from_preset("48k", "v2", use_f0=True)
    y = torch.from_numpy(_signal(48000, 0.25))[None]
    assert torch.equal(spectrogram_from_config(y, config), linear_spectrogram(y, 2048, 480, 2048))
    mel = mel_from_config(y, config)
    assert mel.shape == (1, 128, y.shape[-1] // 480)
    assert torch.equal(mel, mel_spectrogram(y, 2048, 128, 48000, 480, 2048))


def test_half_precision_input_and_gradients():
    y = torch.from_numpy(_signal(32000, 0.2))[None]
    half = linear_spectrogram(y.half(), 1024, 320, 1024)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, linear_spectrogram(y.half().float(), 1024, 320, 1024))
    y.requires_grad_(True)
    mel_spectrogram(y, 1024, 80, 32000, 320, 1024).mean().backward()  # the mel loss back-propagates
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="too short"):
        linear_spectrogram(torch.zeros(1, 100), 1024, 320, 1024)
    with pytest.raises(ValueError, match="shape"):
        linear_spectrogram(torch.zeros(1, 1, 4000), 1024, 320, 1024)
    with pytest.raises(ValueError, match="bins"):
        spec_to_mel(torch.zeros(1, 100, 5), 1024, 80, 32000)
