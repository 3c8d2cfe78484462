"""RVC's training spectrograms (`infer/lib/train/mel_processing.py`, RVC 20240604).

* `linear_spectrogram`: reflect-pad `(n_fft - hop) / 2` samples on each side, `torch.stft` with a periodic Hann
  window of `win_length` and `center=False`, magnitude `sqrt(re^2 + im^2 + 1e-6)`. Frames = `L // hop`.
* `spec_to_mel`: librosa's Slaney-scale, area-normalised mel filter bank (`librosa.filters.mel` defaults) applied
  to the magnitude, then `log(clamp(x, min=1e-5))`.
* `mel_spectrogram = spec_to_mel(linear_spectrogram(...))`.

Per sample rate (RVC configs): 32k n_fft 1024 / hop 320 / 80 mels; 40k 2048 / 400 / 125; 48k 2048 / 480 / 128.
Windows and filter banks are cached per (parameters, dtype, device). Half-precision input is computed in float32
(as RVC's fp16 training does, since STFT needs it) and the result is float32.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "LOG_CLAMP_MIN",
    "MAGNITUDE_EPS",
    "linear_spectrogram",
    "mel_filter_bank",
    "mel_from_config",
    "mel_spectrogram",
    "spec_to_mel",
    "spectrogram_from_config",
]

MAGNITUDE_EPS = 1e-6  # added to re^2 + im^2 before the square root (RVC 20240604; RVC main uses 2e-7)
LOG_CLAMP_MIN = 1e-5  # mel magnitudes are clamped to this before the log (RVC main uses 2e-6)


@lru_cache(maxsize=32)
def _hann_window(win_length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.hann_window(win_length, dtype=dtype, device=device)


@lru_cache(maxsize=32)
def _mel_basis(n_fft: int, n_mels: int, sampling_rate: int, fmin: float, fmax: float | None,
               dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    import librosa

    basis = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return torch.from_numpy(basis).to(dtype=dtype, device=device)


def mel_filter_bank(n_fft: int, n_mels: int, sampling_rate: int, fmin: float = 0.0, fmax: float | None = None,
                    *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
    """librosa's Slaney mel filter bank [n_mels, n_fft // 2 + 1] (cached; do not modify in place)."""
    return _mel_basis(int(n_fft), int(n_mels), int(sampling_rate), float(fmin),
                      None if fmax is None else float(fmax), dtype, torch.device(device))


def _as_batch(y: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if y.dim() not in (1, 2):
        raise ValueError(f"expected a waveform [L] or a batch [B, L], got shape {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ValueError(f"expected a floating-point waveform, got {y.dtype}")
    if y.dtype in (torch.float16, torch.bfloat16):
        y = y.float()
    return (y[None], True) if y.dim() == 1 else (y, False)


def linear_spectrogram(y: torch.Tensor, n_fft: int, hop_length: int, win_length: int,
                       center: bool = False) -> torch.Tensor:
    """RVC's `spectrogram_torch`: y [B, L] (or [L]) -> magnitude [B, n_fft // 2 + 1, L // hop_length] (or unbatched).

    The input must be longer than `(n_fft - hop_length) / 2` samples (reflect padding). `center=True` additionally
    lets `torch.stft` centre the frames, exactly as passing it to RVC's function would.
    """
    batch, unbatched = _as_batch(y)
    pad = int((n_fft - hop_length) / 2)
    if batch.shape[-1] <= pad:
        raise ValueError(f"waveform of {batch.shape[-1]} samples is too short for n_fft={n_fft}, "
                         f"hop_length={hop_length} (needs more than {pad})")
    batch = F.pad(batch.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = _hann_window(int(win_length), batch.dtype, batch.device)
    spec = torch.stft(batch, n_fft, hop_length=hop_length, win_length=win_length, window=window, center=center,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + MAGNITUDE_EPS)
    return spec[0] if unbatched else spec


def spec_to_mel(spec: torch.Tensor, n_fft: int, n_mels: int, sampling_rate: int, fmin: float = 0.0,
                fmax: float | None = None) -> torch.Tensor:
    """Magnitude [..., n_fft // 2 + 1, T] -> log-mel [..., n_mels, T] (Slaney mel bank, `log(clamp(x, 1e-5))`)."""
    if spec.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"spectrogram has {spec.shape[-2]} bins, but n_fft={n_fft} gives {n_fft // 2 + 1}")
    basis = mel_filter_bank(n_fft, n_mels, sampling_rate, fmin, fmax, dtype=spec.dtype, device=spec.device)
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=LOG_CLAMP_MIN))


def mel_spectrogram(y: torch.Tensor, n_fft: int, n_mels: int, sampling_rate: int, hop_length: int, win_length: int,
                    fmin: float = 0.0, fmax: float | None = None, center: bool = False) -> torch.Tensor:
    """RVC's `mel_spectrogram_torch`: y [B, L] -> log-mel [B, n_mels, L // hop_length]."""
    spec = linear_spectrogram(y, n_fft, hop_length, win_length, center=center)
    return spec_to_mel(spec, n_fft, n_mels, sampling_rate, fmin, fmax)


def spectrogram_from_config(y: torch.Tensor, config: Any) -> torch.Tensor:
    """`linear_spectrogram` with an `RVCConfig`'s `filter_length`, `hop_length`, `win_length` (the posterior
    encoder's input `y`, [B, spec_channels, L // hop])."""
    return linear_spectrogram(y, config.filter_length, config.hop_length, config.win_length)


def mel_from_config(y: torch.Tensor, config: Any) -> torch.Tensor:
    """`mel_spectrogram` with an `RVCConfig`'s audio fields (the mel loss), [B, n_mel_channels, L // hop]."""
    return mel_spectrogram(y, config.filter_length, config.n_mel_channels, config.sampling_rate, config.hop_length,
                           config.win_length, config.mel_fmin, config.mel_fmax)
