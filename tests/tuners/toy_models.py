"""Small models with every 1-D conv geometry RVC uses, for the tuner tests (importable from subprocess scripts).

`ToyConvNet` is a non-RVC model (PEFT's stock layer for its grouped Conv1d `gconv`); `RVCStyleToyConvNet` is the
same network declared an RVC network (`rvc_peft_rvc_network = True`), so every conv there gets rvc_peft's layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

WEIGHT_NORM_KINDS = ("none", "parametrized", "legacy")
# every layer rvc_peft's own LoRA layers handle on an RVC network (the rest go to stock PEFT; on a non-RVC model so
# does the grouped `gconv`)
CONV_TARGETS = ["dil3", "dil5", "reflect", "up1", "up2", "gup", "gconv"]
ALL_TARGETS = ["lin", "emb", "pre", *CONV_TARGETS, "post"]


def _norm(module: nn.Module, kind: str) -> nn.Module:
    if kind == "parametrized":
        return parametrizations.weight_norm(module, dim=0)
    if kind == "legacy":
        return torch.nn.utils.weight_norm(module, dim=0)
    return module


class ToyConvNet(nn.Module):
    """Linear + Embedding + plain, dilated (d=3, 5), reflect-padded and grouped Conv1d + ConvTranspose1d (k16 s8 p4,
    k4 s2 p1, grouped k4 s2 p1). forward(x [B, T, 4], speaker [B] long) -> [B, 1, 32·T]."""

    def __init__(self, weight_norm: str = "none") -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.emb = nn.Embedding(5, 8)
        self.pre = nn.Conv1d(4, 8, 3, padding=1)
        self.dil3 = _norm(nn.Conv1d(8, 8, 3, dilation=3, padding=3), weight_norm)
        self.dil5 = _norm(nn.Conv1d(8, 8, 5, dilation=5, padding=10), weight_norm)
        self.reflect = _norm(nn.Conv1d(8, 8, 5, padding=2, padding_mode="reflect"), weight_norm)
        self.up1 = _norm(nn.ConvTranspose1d(8, 6, 16, 8, 4), weight_norm)
        self.up2 = _norm(nn.ConvTranspose1d(6, 4, 4, 2, 1), weight_norm)
        self.gup = _norm(nn.ConvTranspose1d(4, 4, 4, 2, 1, groups=2), weight_norm)
        self.gconv = _norm(nn.Conv1d(4, 4, 3, padding=1, groups=2), weight_norm)
        self.post = nn.Conv1d(4, 1, 7, padding=3)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        h = self.pre(self.lin(x).transpose(1, 2)) + self.emb(speaker).unsqueeze(-1)
        h = torch.tanh(self.dil3(h)) + h
        h = torch.tanh(self.dil5(h)) + h
        h = self.reflect(h)
        h = self.up2(torch.tanh(self.up1(h)))
        h = self.gconv(torch.tanh(self.gup(h)))
        return self.post(h)


class RVCStyleToyConvNet(ToyConvNet):
    """`ToyConvNet` declared an RVC network: its grouped Conv1d gets rvc_peft's (mergeable) LoRA layer too."""

    rvc_peft_rvc_network = True


class LinearOnly(nn.Module):
    """A non-RVC model with Linear layers only (stock PEFT behaviour must be unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 12)
        self.b = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def toy_inputs(batch: int = 3, frames: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 4, generator=gen), torch.arange(batch) % 5


