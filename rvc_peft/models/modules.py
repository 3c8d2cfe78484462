"""Building blocks shared by RVC's encoders, flow and decoder (VITS `modules.py` equivalents).

Attribute names match RVC's so state-dict keys line up (`in_layers`, `res_skip_layers`, `cond_layer`,
`convs1`, `convs2`, `pre`, `enc`, `post`, `gamma`, `beta`, ...).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .weight_norm import weight_norm

LRELU_SLOPE = 0.1


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'Same' padding of an odd kernel with dilation."""
    return (kernel_size * dilation - dilation) // 2


def sequence_mask(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] lengths -> [B, max_length] bool mask, True inside each sequence."""
    if max_length is None:
        max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class LayerNorm(nn.Module):
    """Layer norm over the channel axis of [B, C, T] (RVC's own class: parameters `gamma`, `beta`)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class WaveNet(nn.Module):
    """Gated dilated conv stack with speaker conditioning (RVC's `modules.WN`).

    forward(x [B, H, T], x_mask [B, 1, T], g [B, G, 1] | None) -> [B, H, T] (the summed skip outputs).
    """

    def __init__(
        self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int = 0,
        p_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        self.drop = nn.Dropout(p_dropout)
        if gin_channels:
            self.cond_layer = weight_norm(nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1))
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                weight_norm(
                    nn.Conv1d(
                        hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation,
                        padding=get_padding(kernel_size, dilation),
                    )
                )
            )
            # The last layer only feeds the skip sum, so it has half the outputs.
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(weight_norm(nn.Conv1d(hidden_channels, res_skip_channels, 1)))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        h = self.hidden_channels
        output = torch.zeros_like(x)
        g = self.cond_layer(g) if g is not None else None
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            x_in = in_layer(x)
            if g is not None:
                x_in = x_in + g[:, i * 2 * h : (i + 1) * 2 * h]
            acts = self.drop(torch.tanh(x_in[:, :h]) * torch.sigmoid(x_in[:, h:]))
            res_skip = res_skip_layer(acts)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :h]) * x_mask
                output = output + res_skip[:, h:]
            else:
                output = output + res_skip
        return output * x_mask


class ResBlock1(nn.Module):
    """HiFi-GAN residual block: three (dilated conv, conv) pairs, dilations (1, 3, 5) in RVC.

    forward(x [B, C, T]) -> [B, C, T]
    """

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=get_padding(kernel_size)))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = F.leaky_relu(x, LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            xt = F.leaky_relu(c1(xt), LRELU_SLOPE)
            if x_mask is not None:
                xt = xt * x_mask
            x = c2(xt) + x
        return x if x_mask is None else x * x_mask


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: the second half of the channels is shifted by a WaveNet of the first.

    forward(x [B, C, T], x_mask [B, 1, T], g, reverse) -> [B, C, T]
    """

    def __init__(
        self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
        gin_channels: int,
    ) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)
        # Zero-initialised so a fresh flow starts as the identity (VITS).
        self.post.weight.data.zero_()
        self.post.bias.data.zero_()

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = False
    ) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        h = self.enc(self.pre(x0) * x_mask, x_mask, g=g)
        mean = self.post(h) * x_mask
        x1 = (x1 - mean) * x_mask if reverse else mean + x1 * x_mask
        return torch.cat([x0, x1], dim=1)


class Flip(nn.Module):
    """Reverses the channel axis between coupling layers (no parameters)."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """The normalising flow between the prior and posterior: 4 coupling layers interleaved with flips.

    forward(x [B, C, T], x_mask [B, 1, T], g [B, G, 1], reverse) -> [B, C, T]
    """

    def __init__(
        self, channels: int, hidden_channels: int, kernel_size: int = 5, dilation_rate: int = 1, n_layers: int = 3,
        n_flows: int = 4, gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(
                ResidualCouplingLayer(channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
            )
            self.flows.append(Flip())

    def forward(
        self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = False
    ) -> torch.Tensor:
        for flow in reversed(self.flows) if reverse else self.flows:
            x = flow(x, x_mask, g=g, reverse=reverse)
        return x


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> latent z (training only; RVC drops it from exported voices).

    forward(y [B, S, T], y_lengths [B], g [B, G, 1]) -> (z, m_q, logs_q [B, C, T], y_mask [B, 1, T])
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int = 5,
        dilation_rate: int = 1, n_layers: int = 16, gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(
        self, y: torch.Tensor, y_lengths: torch.Tensor, g: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        y_mask = sequence_mask(y_lengths, y.size(2)).unsqueeze(1).to(y.dtype)
        h = self.enc(self.pre(y) * y_mask, y_mask, g=g)
        stats = self.proj(h) * y_mask
        m, logs = torch.split(stats, self.out_channels, dim=1)
        z = (m + torch.randn_like(m) * torch.exp(logs)) * y_mask
        return z, m, logs, y_mask
