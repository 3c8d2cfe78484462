"""The voice lab's content encoder: speaker-normalised MFCCs in HuBERT's frame geometry, projected to RVC's width.

No ContentVec/HuBERT weights can be downloaded here, and a randomly initialised HuBERT is a poor stand-in: measured
on 60 utterances (10 voices x 6 sentences, `voice-lab.md`), the sentence is recognised from random-HuBERT layer-12
features 45% of the time but the *speaker* 48% of the time, so a synthesizer trained on them copies the source
speaker. Mel-cepstra with per-utterance mean/variance normalisation identify the sentence 100% of the time and the
speaker far less; an any-to-one model driven by 20 such coefficients converted ten voices into its target at
Resemblyzer similarity 0.85-0.91. That is what RVC wants from ContentVec (content, little speaker), so the lab uses
it, behind the same interface as the real encoders:

* frames exactly like HuBERT-base at 16 kHz: a 400-sample window every 320 samples, `F = (L - 400) // 320 + 1`;
* per frame: Hann window, 512-point power spectrum, 40 Slaney mel bands (20 Hz-8 kHz), log, DCT-II; cepstra
  c1..c20 (c0, the loudness, is dropped), each normalised to zero mean and unit variance over the utterance;
* a fixed, seeded random projection (orthonormal columns scaled to unit output variance) to 256 (v1) or 768 (v2)
  dimensions, stored as ordinary weights so the folder loads like any content encoder.

A folder is `config.json` (`model_type: "rvc_lab_mfcc"`) + `model.safetensors` (`proj_v1.weight`, `proj_v2.weight`);
`rvc_peft.features.content_encoder.load_content_encoder` recognises it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils.files import atomic_write

MODEL_TYPE = "rvc_lab_mfcc"
WINDOW, HOP, N_FFT = 400, 320, 512  # HuBERT-base's receptive field and stride at 16 kHz
OUTPUT_DIMS = {"v1": 256, "v2": 768}


def _dct_matrix(n_mels: int, n_coefficients: int) -> torch.Tensor:
    """Orthonormal DCT-II basis [n_mels, n_coefficients] (librosa/scipy `norm="ortho"`)."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_coefficients, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def seeded_projection(n_in: int, n_out: int, seed: int) -> torch.Tensor:
    """A fixed [n_out, n_in] matrix with orthonormal columns scaled by sqrt(n_out / n_in): unit-variance inputs give
    unit-variance outputs, and no input direction is lost."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64))
    return (q * math.sqrt(n_out / n_in)).float().contiguous()


class MFCCContentEncoder(nn.Module):
    """Speaker-normalised MFCC content features for RVC `version` ("v1": 256-d, "v2": 768-d), 50 frames/s.

    Same interface as `ContentEncoder`: `forward(wav16k [B, L]) -> [B, F, E]`, `extract`, `num_frames`, `version`,
    `output_dim`, `kind`, `name_or_path`, `weights_path`. Frozen after construction.
    """

    kind = "lab-mfcc"

    def __init__(self, projection: torch.Tensor, version: str = "v2", *, n_mels: int = 40, fmin: float = 20.0,
                 fmax: float = 8000.0, name_or_path: str = "") -> None:
        super().__init__()
        from .content_encoder import ContentEncoderError
        from .spectrogram import mel_filter_bank

        if version not in OUTPUT_DIMS:
            raise ContentEncoderError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
        if projection.dim() != 2 or projection.shape[0] != OUTPUT_DIMS[version]:
            raise ContentEncoderError(f"{name_or_path or 'projection'}: {version} needs a [{OUTPUT_DIMS[version]}, "
                                      f"n_mfcc] projection, got {tuple(projection.shape)}")
        self.version = version
        self.n_mfcc = projection.shape[1]
        self.proj = nn.Linear(self.n_mfcc, projection.shape[0], bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(projection)
        self.register_buffer("mel_basis", mel_filter_bank(N_FFT, n_mels, 16000, fmin, fmax).clone(), persistent=False)
        self.register_buffer("dct", _dct_matrix(n_mels, self.n_mfcc + 1)[:, 1:].contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True), persistent=False)
        self.fmin, self.fmax = fmin, fmax
        self.name_or_path = name_or_path
        self.weights_path: str | None = None
        self.requires_grad_(False).eval()

    @property
    def output_dim(self) -> int:
        return self.proj.out_features

    @staticmethod
    def num_frames(num_samples: int) -> int:
        """Feature frames for `num_samples` at 16 kHz, as HuBERT-base: `(L - 400) // 320 + 1`."""
        return max(0, (num_samples - WINDOW) // HOP + 1)

    def mfcc(self, wav16k: torch.Tensor) -> torch.Tensor:
        """wav16k [B, L] -> utterance-normalised cepstra c1..c_n [B, F, n_mfcc] (F as `num_frames`)."""
        frames = wav16k.float().unfold(-1, WINDOW, HOP) * self.window  # [B, F, 400]
        power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2)  # [B, F, 257]
        log_mel = torch.log(power @ self.mel_basis.T + 1e-6)  # [B, F, n_mels]
        cepstra = log_mel @ self.dct  # [B, F, n_mfcc]
        mean = cepstra.mean(dim=1, keepdim=True)
        std = cepstra.std(dim=1, keepdim=True, unbiased=False) if cepstra.shape[1] > 1 else torch.ones_like(mean)
        return (cepstra - mean) / (std + 1e-5)

    def forward(self, wav16k: torch.Tensor) -> torch.Tensor:
        """wav16k [B, L] float at 16 kHz -> content features [B, F, E], F = (L - 400) // 320 + 1 (50 fps)."""
        from .content_encoder import ContentEncoderError

        if wav16k.dim() != 2:
            raise ContentEncoderError(f"expected a [batch, samples] waveform, got shape {tuple(wav16k.shape)}")
        if wav16k.shape[-1] < WINDOW:
            raise ContentEncoderError(f"audio too short: {wav16k.shape[-1]} samples; at least {WINDOW} (25 ms at "
                                      "16 kHz) are needed for one feature frame")
        return self.proj(self.mfcc(wav16k).to(self.proj.weight.dtype))

    @torch.inference_mode()
    def extract(self, wav16k: np.ndarray | torch.Tensor) -> np.ndarray:
        """One clip [L] at 16 kHz (numpy or tensor) -> float32 numpy features [F, E]."""
        from .content_encoder import ContentEncoderError

        wav = torch.as_tensor(np.asarray(wav16k) if not torch.is_tensor(wav16k) else wav16k)
        if wav.dim() != 1:
            raise ContentEncoderError(f"extract() takes one mono clip [samples], got shape {tuple(wav.shape)}")
        return self(wav.to(self.proj.weight.device, torch.float32)[None])[0].float().cpu().numpy()

    def save_pretrained(self, folder: str | os.PathLike, *, seed: int | None = None) -> None:
        """Write `config.json` + `model.safetensors` with both versions' projections (v1 from the same seed+1)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        other = "v1" if self.version == "v2" else "v2"
        seed = 0 if seed is None else seed
        tensors = {f"proj_{self.version}.weight": self.proj.weight.detach().float().cpu().contiguous(),
                   f"proj_{other}.weight": seeded_projection(self.n_mfcc, OUTPUT_DIMS[other], seed + 1)}
        config = {"model_type": MODEL_TYPE, "n_mfcc": self.n_mfcc, "n_mels": int(self.mel_basis.shape[0]),
                  "fmin": self.fmin, "fmax": self.fmax, "sampling_rate": 16000, "window": WINDOW, "hop": HOP,
                  "n_fft": N_FFT, "seed": seed, "content_encoder_kind": self.kind,
                  "description": "rvc-peft voice-lab stand-in for ContentVec: utterance-normalised MFCC c1..c20 in "
                                 "HuBERT's 20 ms frames, fixed seeded projection to 256 (v1) / 768 (v2)"}
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        atomic_write(folder / "config.json",
                     lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))


def lab_content_encoder(version: str = "v2", *, n_mfcc: int = 20, seed: int = 0) -> MFCCContentEncoder:
    """The seeded lab encoder: v2 uses `seed`, v1 `seed + 1` (what `save_pretrained` stores beside it)."""
    return MFCCContentEncoder(seeded_projection(n_mfcc, OUTPUT_DIMS[version], seed if version == "v2" else seed + 1),
                              version, name_or_path=f"lab-mfcc-seed{seed}")


def is_lab_encoder_folder(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def load_lab_encoder(folder: Path, version: str, source: str) -> MFCCContentEncoder:
    """Read a folder written by `MFCCContentEncoder.save_pretrained` (errors name the file)."""
    from ..checkpoints.safe_load import CheckpointError, read_safetensors
    from .content_encoder import ContentEncoderError

    config_file, weights = folder / "config.json", folder / "model.safetensors"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        n_mels, fmin, fmax = int(config["n_mels"]), float(config["fmin"]), float(config["fmax"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContentEncoderError(f"{config_file}: unreadable lab content-encoder config ({exc})") from exc
    if not (8 <= n_mels <= 128 and 0.0 <= fmin < fmax <= 8000.0):
        raise ContentEncoderError(f"{config_file}: n_mels/fmin/fmax out of range ({n_mels}, {fmin}, {fmax})")
    try:
        tensors = read_safetensors(weights)
    except CheckpointError as exc:
        raise ContentEncoderError(f"{weights}: cannot read weights ({exc.reason})") from None
    key = f"proj_{version}.weight"
    if key not in tensors:
        raise ContentEncoderError(f"{weights}: no {key} (has {', '.join(sorted(tensors))})")
    projection = tensors[key].float()
    if not torch.isfinite(projection).all():
        raise ContentEncoderError(f"{weights}: {key} holds NaN or infinite values")
    if projection.dim() != 2 or not 1 <= projection.shape[1] < n_mels:
        raise ContentEncoderError(f"{weights}: {key} has shape {tuple(projection.shape)}; expected "
                                  f"[{OUTPUT_DIMS[version]}, n_mfcc < {n_mels}]")
    encoder = MFCCContentEncoder(projection, version, n_mels=n_mels, fmin=fmin, fmax=fmax, name_or_path=source)
    encoder.weights_path = str(folder)
    return encoder
