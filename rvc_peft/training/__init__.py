"""rvc_peft.training: RVC's GAN objective on LoRA adapters with Accelerate (`train_accelerate.py` calls `main`).

The loop and its dependencies load on first use, so the argument parser (`rvc_peft.training.arguments`) stays cheap to
import for `rvc-peft --help`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .arguments import build_parser, check_args, parse_args
from .config import TrainingConfig
from .errors import CheckpointSaveError, NonFiniteLossError, OutOfMemoryError, TrainingError, TrainingSetupError

_LAZY = {
    "RVCTrainer": "trainer", "TrainingResult": "trainer", "main": "trainer",
    "discriminator_loss": "losses", "feature_loss": "losses", "generator_loss": "losses", "kl_loss": "losses",
    "mel_loss": "losses",
}

__all__ = [
    "CheckpointSaveError",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "RVCTrainer",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "TrainingSetupError",
    "build_parser",
    "check_args",
    "discriminator_loss",
    "feature_loss",
    "generator_loss",
    "kl_loss",
    "main",
    "mel_loss",
    "parse_args",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
