"""RVC's multi-period discriminators (HiFi-GAN MPD plus one scale discriminator), for training.

v1 = periods [2, 3, 5, 7, 11, 17] (129 state-dict keys), v2 adds [23, 37] (165 keys); key names
`discriminators.{k}.convs.{i}` / `discriminators.{k}.conv_post` as in RVC's `D*.pth` files.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from .modules import LRELU_SLOPE, get_padding
from .weight_norm import weight_norm

PERIODS = {"v1": [2, 3, 5, 7, 11, 17], "v2": [2, 3, 5, 7, 11, 17, 23, 37]}


class DiscriminatorS(nn.Module):
    """Scale discriminator on the raw waveform. forward(x [B, 1, L]) -> (logits [B, N], feature maps)."""

    def __init__(self) -> None:
        super().__init__()
        layout = [  # (in, out, kernel, stride, groups, padding)
            (1, 16, 15, 1, 1, 7), (16, 64, 41, 4, 4, 20), (64, 256, 41, 4, 16, 20),
            (256, 1024, 41, 4, 64, 20), (1024, 1024, 41, 4, 256, 20), (1024, 1024, 5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in layout
        )
        self.conv_post = weight_norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorP(nn.Module):
    """Period discriminator: the waveform folded to [T/p, p] and convolved along time.

    forward(x [B, 1, L]) -> (logits [B, N], feature maps)
    """

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        channels = [1, 32, 128, 512, 1024]
        pad = (get_padding(kernel_size, 1), 0)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (kernel_size, 1), (stride, 1), padding=pad))
            for cin, cout in itertools.pairwise(channels)
        )
        self.convs.append(weight_norm(nn.Conv2d(1024, 1024, (kernel_size, 1), 1, padding=pad)))
        self.conv_post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t += n_pad
        x = x.view(b, c, t // self.period, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    """RVC's `MultiPeriodDiscriminator` (v1) / `MultiPeriodDiscriminatorV2` (v2).

    forward(y [B, 1, L] real, y_hat [B, 1, L] generated) ->
        (real logits, fake logits, real feature maps, fake feature maps), one entry per discriminator.
    """

    def __init__(self, version: str = "v2") -> None:
        super().__init__()
        if version not in PERIODS:
            raise ValueError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
        self.version = version
        self.discriminators = nn.ModuleList([DiscriminatorS(), *(DiscriminatorP(p) for p in PERIODS[version])])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[list, list, list, list]:
        y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
        for d in self.discriminators:
            y_d_r, fmap_r = d(y)
            y_d_g, fmap_g = d(y_hat)
            y_d_rs.append(y_d_r)
            y_d_gs.append(y_d_g)
            fmap_rs.append(fmap_r)
            fmap_gs.append(fmap_g)
        return y_d_rs, y_d_gs, fmap_rs, fmap_gs
