"""Fixtures for training tests: tiny datasets in the rvc-peft format, tiny base files, a narrow discriminator.

The discriminator keeps RVC's structure and forward code (`DiscriminatorS`/`DiscriminatorP`/
`MultiPeriodDiscriminator`, same periods, kernels, strides, groups pattern and parameter names) with a fraction of
the channels, so a GAN step costs milliseconds instead of seconds on a CPU.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rvc_peft.checkpoints import save_rvc_checkpoint
from rvc_peft.data.dataset import DatasetWriter, RVCDatasetInfo
from rvc_peft.features.pitch import f0_to_coarse
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.models import RVCConfig
from rvc_peft.models.discriminators import PERIODS, DiscriminatorP, DiscriminatorS, MultiPeriodDiscriminator
from rvc_peft.models.weight_norm import weight_norm
from rvc_peft.testing import random_synthesizer, small_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_synthetic_dataset(path: str | os.PathLike, config: RVCConfig, n_rows: int = 6, seconds: float = 0.6,
                           seed: int = 0, speaker_id: int = 0) -> Path:
    """Write an rvc-peft dataset of `n_rows` harmonic tones with known F0 (pitch columns for pitch configs).

    Each row: a voiced signal at the model rate with its own base F0, content features at 50 fps that encode the
    row and time (so the mapping features -> audio is learnable), coarse/Hz pitch at 100 fps.
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    with DatasetWriter(path, config.content_dim, config.use_f0) as writer:
        for i in range(n_rows):
            base_f0 = 120.0 + 40.0 * i
            audio, f0 = voiced_signal(base_f0, seconds, sample_rate=config.sampling_rate, seed=seed + i,
                                      vibrato_semitones=1.0, peak=0.6)
            frames100 = int(seconds * 100) + 1
            f0_100 = np.interp(np.arange(frames100), np.arange(len(f0)), f0).astype(np.float32)
            frames50 = int(seconds * 50) - 1
            phone = rng.standard_normal((frames50, config.content_dim)).astype(np.float32) * 0.5
            phone[:, 0] = base_f0 / 100.0
            row = {"audio": audio, "phone": phone, "speaker_id": speaker_id, "source_file": f"tone{i}.wav",
                   "offset": 0.0, "slice_index": i}
            if config.use_f0:
                row["pitchf"] = f0_100
                row["pitch"] = f0_to_coarse(f0_100)
            writer.add(row)
        info = RVCDatasetInfo(sample_rate=config.sampling_rate, version=config.version, use_f0=config.use_f0,
                              f0_method="synthetic" if config.use_f0 else None, content_encoder="synthetic",
                              content_dim=config.content_dim, hop_length=config.hop_length, source="preprocess")
        writer.finish(info)
    return path


def save_base(path: str | os.PathLike, config: RVCConfig | None = None, seed: int = 0) -> Path:
    """A tiny random synthesizer saved as an RVC pretrained base file (`{"model": fp16 state}`, like f0G40k.pth)."""
    model = random_synthesizer(config if config is not None else small_config(), seed=seed)
    return save_rvc_checkpoint(model, path, kind="base")


class NarrowDiscriminatorS(DiscriminatorS):
    """RVC's scale discriminator with 1/64 of the channels (groups scaled to keep 4 channels per group)."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        layout = [(1, 4, 15, 1, 1, 7), (4, 8, 41, 4, 2, 20), (8, 16, 41, 4, 4, 20), (16, 16, 41, 4, 4, 20),
                  (16, 16, 41, 4, 4, 20), (16, 16, 5, 1, 1, 2)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in layout
        )
        self.conv_post = weight_norm(nn.Conv1d(16, 1, 3, 1, padding=1))


class NarrowDiscriminatorP(DiscriminatorP):
    """RVC's period discriminator with channels 1 -> 4 -> 8 -> 16 -> 16 instead of 1 -> 32 -> ... -> 1024."""

    def __init__(self, period: int) -> None:
        nn.Module.__init__(self)
        self.period = period
        channels = [1, 4, 8, 16, 16]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (5, 1), (3, 1), padding=(2, 0)))
            for cin, cout in itertools.pairwise(channels)
        )
        self.convs.append(weight_norm(nn.Conv2d(16, 16, (5, 1), 1, padding=(2, 0))))
        self.conv_post = weight_norm(nn.Conv2d(16, 1, (3, 1), 1, padding=(1, 0)))


def narrow_discriminator(version: str = "v2", seed: int = 0) -> MultiPeriodDiscriminator:
    """A `MultiPeriodDiscriminator` of `version` built from the narrow sub-discriminators (seeded weights)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device("meta"):  # the full-width sub-discriminators are replaced at once: do not allocate them
            model = MultiPeriodDiscriminator(version)
        model.discriminators = nn.ModuleList([NarrowDiscriminatorS(), *(NarrowDiscriminatorP(p) for p in
                                                                         PERIODS[version])])
    finally:
        torch.random.set_rng_state(state)
    return model


def train_args(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """argv for `parse_args` with tiny, fast settings; `extra` overrides/extends."""
    return ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(data), "--output_dir", str(out),
            "--train_batch_size", "2", "--segment_frames", "8", "--report_to", "none", "--num_validation_clips", "1",
            "--validation_steps", "1000", "--checkpointing_steps", "1000", "--logging_steps", "1",
            "--dataloader_num_workers", "0", *extra]
