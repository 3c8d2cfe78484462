"""RVC's decoders: the HiFi-GAN `Generator` and the pitch-driven `GeneratorNSF` with its sine source."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .modules import LRELU_SLOPE, ResBlock1
from .weight_norm import weight_norm


class SineGen(nn.Module):
    """Sine excitation from frame-rate F0 (harmonic_num 0, sine_amp 0.1, noise_std 0.003).

    Phase at output sample n (frame t = n // upp, k = n mod upp + 1) is
    Σ_{t'<t} f0[t']·upp/sr + f0[t]·k/sr, accumulated per frame (RVC 20240604) in float64 so long inputs
    keep their precision. Unvoiced samples carry noise of amplitude sine_amp/3 only.
    forward(f0 [B, T] Hz, upp) -> (sine [B, T·upp, 1], uv [B, T·upp, 1])
    """

    def __init__(self, sampling_rate: int, sine_amp: float = 0.1, noise_std: float = 0.003, voiced_threshold: float = 0):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold

    def forward(self, f0: torch.Tensor, upp: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            step = f0.double() / self.sampling_rate  # phase increment per sample, per frame [B, T]
            frame_start = torch.cumsum(step * upp, dim=1) - step * upp  # exclusive prefix sum
            frame_start = torch.remainder(frame_start, 1.0)
            k = torch.arange(1, upp + 1, dtype=step.dtype, device=f0.device)
            phase = frame_start.unsqueeze(-1) + step.unsqueeze(-1) * k  # [B, T, upp]
            sine = (torch.sin(2 * math.pi * phase) * self.sine_amp).to(f0.dtype).reshape(f0.shape[0], -1, 1)
            uv = (f0 > self.voiced_threshold).to(f0.dtype).repeat_interleave(upp, dim=1).unsqueeze(-1)
            noise_amp = uv * self.noise_std + (1 - uv) * self.sine_amp / 3
            sine = sine * uv + noise_amp * torch.randn_like(sine)
        return sine, uv


class SourceModuleHnNSF(nn.Module):
    """Harmonic source: tanh(Linear(sine)). forward(f0 [B, T], upp) -> [B, T·upp, 1]."""

    def __init__(self, sampling_rate: int) -> None:
        super().__init__()
        self.l_sin_gen = SineGen(sampling_rate)
        self.l_linear = nn.Linear(1, 1)
        self.l_tanh = nn.Tanh()

    def forward(self, f0: torch.Tensor, upp: int) -> torch.Tensor:
        sine, _ = self.l_sin_gen(f0, upp)
        return self.l_tanh(self.l_linear(sine.to(self.l_linear.weight.dtype)))


class Generator(nn.Module):
    """HiFi-GAN decoder with speaker conditioning (RVC's `Generator`, used by no-pitch models).

    forward(x [B, C, T], g [B, G, 1], n_res) -> audio [B, 1, T·upp] in [-1, 1]
    `n_res` (RVC's `return_length2`) linearly resamples the input to n_res frames first.
    """

    def __init__(
        self, initial_channel: int, resblock_kernel_sizes: list[int], resblock_dilation_sizes: list[list[int]],
        upsample_rates: list[int], upsample_initial_channel: int, upsample_kernel_sizes: list[int],
        gin_channels: int = 0,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upp = math.prod(upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            self.ups.append(
                weight_norm(
                    nn.ConvTranspose1d(
                        upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1), k, u,
                        padding=(k - u) // 2,
                    )
                )
            )
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            ch = upsample_initial_channel // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch, k, d))
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=False)
        if gin_channels:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)
        for up in self.ups:
            _normal_weight_norm_init(up)
        for block in self.resblocks:
            for conv in (*block.convs1, *block.convs2):
                _normal_weight_norm_init(conv)

    def _stage(self, i: int, x: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
        if source is not None:
            x = x + source
        blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
        return sum(block(x) for block in blocks) / self.num_kernels

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        # RVC's final activation uses PyTorch's default slope 0.01, not LRELU_SLOPE.
        return torch.tanh(self.conv_post(F.leaky_relu(x)))

    def _input(self, x: torch.Tensor, g: torch.Tensor | None, n_res: int | None) -> torch.Tensor:
        if n_res is not None and n_res != x.shape[-1]:
            x = F.interpolate(x, size=n_res, mode="linear")
        x = self.conv_pre(x)
        return x + self.cond(g) if g is not None else x

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None, n_res: int | None = None) -> torch.Tensor:
        x = self._input(x, g, n_res)
        for i in range(self.num_upsamples):
            x = self._stage(i, x, None)
        return self._output(x)


class GeneratorNSF(Generator):
    """HiFi-GAN decoder driven by a neural-source-filter excitation (RVC's `GeneratorNSF`, pitch models).

    After each upsampling stage the sine source, strided down to that stage's rate by `noise_convs[i]`, is added.
    forward(x [B, C, T], f0 [B, T] Hz, g [B, G, 1], n_res) -> audio [B, 1, T·upp]
    """

    def __init__(
        self, initial_channel: int, resblock_kernel_sizes: list[int], resblock_dilation_sizes: list[list[int]],
        upsample_rates: list[int], upsample_initial_channel: int, upsample_kernel_sizes: list[int],
        gin_channels: int, sampling_rate: int,
    ) -> None:
        super().__init__(
            initial_channel, resblock_kernel_sizes, resblock_dilation_sizes, upsample_rates,
            upsample_initial_channel, upsample_kernel_sizes, gin_channels,
        )
        self.m_source = SourceModuleHnNSF(sampling_rate)
        self.noise_convs = nn.ModuleList()
        for i in range(self.num_upsamples):
            ch = upsample_initial_channel // 2 ** (i + 1)
            if i + 1 < self.num_upsamples:
                stride = math.prod(upsample_rates[i + 1 :])
                self.noise_convs.append(nn.Conv1d(1, ch, kernel_size=stride * 2, stride=stride, padding=stride // 2))
            else:
                self.noise_convs.append(nn.Conv1d(1, ch, kernel_size=1))

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, f0: torch.Tensor, g: torch.Tensor | None = None, n_res: int | None = None
    ) -> torch.Tensor:
        source = self.m_source(f0, self.upp).transpose(1, 2)  # [B, 1, T·upp]
        if n_res is not None and n_res * self.upp != source.shape[-1]:
            source = F.interpolate(source, size=n_res * self.upp, mode="linear")
        x = self._input(x, g, n_res)
        for i in range(self.num_upsamples):
            x = self._stage(i, x, self.noise_convs[i](source))
        return self._output(x)


def _normal_weight_norm_init(module: nn.Module, std: float = 0.01) -> None:
    """HiFi-GAN's N(0, 0.01) conv init, applied through the weight-norm parametrization."""
    pair = module.parametrizations.weight  # write (g, v) directly: cheaper than assigning the weight
    with torch.no_grad():
        pair.original1.normal_(0.0, std)
        pair.original0.copy_(torch.norm_except_dim(pair.original1, 2, 0))
