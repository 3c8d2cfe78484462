"""Optimisers and learning-rate schedules: RVC's AdamW settings and ExponentialLR, plus warm-up/cosine/linear."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LearningRateSchedule:
    """Multiplier of the base learning rate after `step` optimiser updates (a picklable `LambdaLR` lambda).

    kind: "rvc_exponential" (gamma ** epoch, epoch = step // steps_per_epoch: RVC's per-epoch ExponentialLR),
    "constant", "cosine" (half a cosine from 1 to 0 over the post-warm-up steps) or "linear" (1 -> 0). A linear
    warm-up from 0 over `warmup_steps` multiplies any of them (transformers' convention: step 0 gives 0).
    """

    def __init__(self, kind: str, *, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
                 gamma: float = 0.999875) -> None:
        if kind not in ("rvc_exponential", "constant", "cosine", "linear"):
            raise ValueError(f"unknown learning-rate schedule {kind!r}")
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.warmup_steps = max(0, int(warmup_steps))
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "rvc_exponential":
            return warm * self.gamma ** (step // self.steps_per_epoch)
        if self.kind == "constant":
            return warm
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / decay_steps))
        if self.kind == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm * (1.0 - progress)


def build_optimizer(params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.8, 0.99),
                    eps: float = 1e-9, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """RVC's optimiser: AdamW(lr, betas (0.8, 0.99), eps 1e-9) with PyTorch's default weight decay 0.01."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters to optimise")
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: LearningRateSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` stepped once per optimiser update (never per micro-batch, never per process)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
