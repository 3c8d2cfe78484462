"""Inference fast path for the RVC synthesizer: same outputs as `RVCSynthesizer.infer`, less time.

    fast = optimize_for_inference(model)                         # fp32, ≤1e-4 from the reference path
    fast = optimize_for_inference(model, dtype=torch.bfloat16)   # CPUs with avx512_bf16/AMX, and GPUs
    audio, x_mask, (z, z_p, m_p, logs_p) = fast.infer(phone, phone_lengths, pitch, nsff0, sid)

`optimize_for_inference` returns a copy of the model (the caller's model, its LoRA layers and weight norm are left
untouched) whose `infer` is `RVCSynthesizer.infer` itself, so every calling convention (RVC's no-pitch positional
form, `skip_head`/`return_length`/`return_length2`) and every random draw is the reference's, in the same order:
with the same seed the fp32 output equals the reference to float rounding. What changes is the decoder (95% of the
work, 98.5% of it convolutions), replaced by `FastDecoder`:

* LoRA merged and weight norm folded once (the reference recomputes g·v/‖v‖ at every call);
* activations kept channels-last as [B, C, 1, T] (oneDNN's native layout: no reorder before and after every conv;
  cuDNN's preferred layout for fp16/bf16 tensor cores);
* in-place element-wise work (activations, residual adds, the resblock sum), and the resblocks' mean (/3) folded
  into the next conv's kernel;
* `dtype`: the decoder's upsampling and resblock convolutions in bf16 (CPUs with avx512_bf16/AMX, GPUs) or fp16
  (GPUs only), their outputs added into a float32 residual stream (rounding each conv output once instead of the
  running sums: 0.7 instead of 1.0 dB log-mel distance to fp32 on speech with the voice-lab base). The content
  encoder prior, the flow, the NSF excitation and its convs stay float32 (a few % of the time; the sine phase
  needs the precision).

What was measured and dropped (see benchmarks/bench_synthesizer.py): oneDNN's fused convolution + post-op ops
(`torch.ops.mkldnn._convolution_pointwise`, what inductor's freezing emits: conv + leaky_relu, conv + residual add)
ran no faster than plain convolutions with in-place element-wise ops on this CPU (10 s, v2 40k: 5.15 s against
5.04 s fp32, 2.55 against 2.56 s bf16) and took 2-3x the peak memory (3.4 GB against 1.4 GB at 10 s; a 41 s
segment ran out of 24 GB); merging the three parallel resblocks (kernels 3, 7, 11) into one conv zero-padded to 11
taps costs 33 instead of 21 taps per output (+57% FLOPs) for a GEMM that is already large (C × T·upp); doing the
sine source at frame rate changes the output by more than 1e-4.

The copy is for inference only: its decoder's state-dict keys are not RVC's, so do not save it as a checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..models import RVCSynthesizer, fold_weight_norm
from ..models.generator import Generator, GeneratorNSF
from ..models.modules import LRELU_SLOPE

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OUTPUT_SLOPE = 0.01  # RVC's final leaky_relu uses PyTorch's default slope


def precision_dtype(precision: str | torch.dtype) -> torch.dtype:
    """`"fp32" | "bf16" | "fp16"` (or the torch dtype itself) -> the torch dtype; anything else is a `ValueError`."""
    if isinstance(precision, torch.dtype):
        if precision not in PRECISIONS.values():
            raise ValueError(f"unsupported precision {precision}: choose one of {', '.join(PRECISIONS)}")
        return precision
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def check_precision(dtype: torch.dtype, device: torch.device | str) -> None:
    """Raise a `ValueError` naming the problem when `dtype` cannot run fast on `device`.

    fp16 convolutions are for GPUs (oneDNN runs them on CPUs with AMX-FP16 only, which PyTorch does not expose);
    bf16 on a CPU needs avx512_bf16 or AMX, without which oneDNN emulates it, slower than fp32.
    """
    device = torch.device(device)
    if device.type != "cpu" or dtype == torch.float32:
        return
    if dtype == torch.float16:
        raise ValueError("fp16 is a GPU precision: on a CPU use precision 'bf16' (CPUs with avx512_bf16/AMX) or 'fp32'")
    if not mkldnn_bf16_supported():
        raise ValueError("this CPU has no native bf16 (avx512_bf16 or AMX), where bf16 is slower than fp32: use 'fp32'")


def mkldnn_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (avx512_bf16 / AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def plain_synthesizer(model: nn.Module) -> RVCSynthesizer:
    """A float32, eval-mode copy of `model` with no LoRA layers and no weight norm, computing the same function.

    `model`: an `RVCSynthesizer`, a PEFT model wrapping one, or an `RVCSynthesizer` with LoRA layers injected (a
    `VoiceBank`'s base). Active, enabled adapters are merged into the copy's weights; disabled ones are dropped.
    The posterior encoder (training only) is left out.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    source = model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model
    if not isinstance(source, RVCSynthesizer):
        raise TypeError(f"expected an RVCSynthesizer (or a PEFT model of one), got {type(source).__name__}")
    enc_q = source.__dict__["_modules"].pop("enc_q", None)  # not copied: training only, and large
    try:
        plain = copy.deepcopy(source)
    finally:
        if enc_q is not None:
            source._modules["enc_q"] = enc_q
    plain.config.use_posterior_encoder = False
    for name, module in list(plain.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            if not module.disable_adapters and not module.merged and module.active_adapters:
                module.merge(adapter_names=list(module.active_adapters))  # disabled layers: the base weight alone
            parent_name, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent_name) if parent_name else plain, child, module.get_base_layer())
    fold_weight_norm(plain)
    return plain.float().eval().requires_grad_(False)


def _channels_last(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A Conv1d/ConvTranspose1d kernel [O, I, K] as a channels-last 2-D kernel [O, I, 1, K]."""
    return weight.detach().to(dtype).unsqueeze(2).contiguous(memory_format=torch.channels_last)


class _Conv:
    """One Conv1d or ConvTranspose1d run as a 2-D conv over [B, C, 1, T] channels-last activations."""

    def __init__(self, layer: nn.Conv1d | nn.ConvTranspose1d, dtype: torch.dtype, scale: float = 1.0) -> None:
        self.transposed = isinstance(layer, nn.ConvTranspose1d)
        self.weight = _channels_last(layer.weight.detach().float() * scale, dtype)  # scaled in fp32, then cast
        self.bias = layer.bias.detach().to(dtype) if layer.bias is not None else None
        self.padding = (0, int(layer.padding[0]))
        self.stride = (1, int(layer.stride[0]))
        self.dilation = (1, int(layer.dilation[0]))
        self.output_padding = (0, int(layer.output_padding[0])) if self.transposed else None
        self.groups = int(layer.groups)

    def to(self, device: torch.device) -> _Conv:
        self.weight = self.weight.to(device)
        self.bias = self.bias.to(device) if self.bias is not None else None
        return self

    def __call__(self, x: torch.Tensor, post: str = "none", slope: float = LRELU_SLOPE) -> torch.Tensor:
        """conv(x) [B, O, 1, T'], then `post` ("none" | "leaky_relu" | "tanh") in place."""
        if self.transposed:
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                   self.groups, self.dilation)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if post == "leaky_relu":
            return F.leaky_relu_(y, slope)
        return torch.tanh_(y) if post == "tanh" else y


class FastDecoder(nn.Module):
    """`Generator` / `GeneratorNSF` for inference: folded, channels-last, optionally bf16/fp16.

    Same call as the decoder it replaces: forward(x [B, C, T], f0 [B, T] Hz (pitch models), g [B, G, 1], n_res)
    -> audio [B, 1, T·upp] float32. The input stage (conv_pre + speaker conditioning, at frame rate) and the NSF
    source (float64 phase, float32 noise drawn with `torch.randn_like` exactly as the reference) run the original
    float32 modules; the upsampling, resblock and output convolutions run in `dtype`, the residual sums in float32.
    """

    def __init__(self, decoder: Generator, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype
        self.nsf = isinstance(decoder, GeneratorNSF)
        self.upp = decoder.upp
        self.num_kernels = decoder.num_kernels
        # float32 modules at frame rate (cheap) and the sine source (reference RNG order and precision)
        self.conv_pre = decoder.conv_pre
        self.cond = getattr(decoder, "cond", None)
        self.m_source = decoder.m_source if self.nsf else None
        # Each stage ends with the mean of its resblocks, (r1 + r2 + r3) / 3, followed by leaky_relu and a conv.
        # leaky_relu(x / n) = leaky_relu(x) / n, so the 1/n goes into the next conv's kernel (not its bias) and the
        # division pass over the stage's activations disappears.
        mean_scale = 1.0 / self.num_kernels
        self.ups = [_Conv(up, dtype, scale=1.0 if i == 0 else mean_scale) for i, up in enumerate(decoder.ups)]
        self.noise_convs = [_Conv(conv, torch.float32) for conv in decoder.noise_convs] if self.nsf else []
        self.resblocks = [[(_Conv(c1, dtype), _Conv(c2, dtype))
                           for c1, c2 in zip(block.convs1, block.convs2)] for block in decoder.resblocks]
        self.conv_post = _Conv(decoder.conv_post, dtype, scale=mean_scale)

    def _apply(self, fn: Any, recurse: bool = True) -> FastDecoder:
        # .to(device) moves the prepared kernels too (they are plain tensors, not parameters: they must keep their
        # channels-last layout and their dtype whatever .float()/.half() the owning model gets).
        super()._apply(fn, recurse)
        device = self.conv_pre.weight.device
        for conv in (*self.ups, *self.noise_convs, *(c for block in self.resblocks for pair in block for c in pair),
                     self.conv_post):
            conv.to(device)
        return self

    def _activated(self, x: torch.Tensor, slope: float = LRELU_SLOPE) -> torch.Tensor:
        """leaky_relu(x) in the convolutions' dtype, as a new tensor (x is left as it is)."""
        if x.dtype == self.dtype:
            return F.leaky_relu(x, slope)
        return F.leaky_relu_(x.to(self.dtype), slope)  # the cast makes the copy: one pass, then in place

    def _resblock(self, x: torch.Tensor, pairs: Sequence[tuple[_Conv, _Conv]]) -> torch.Tensor:
        # ResBlock1 without a mask: x = c2(lrelu(c1(lrelu(x)))) + x per dilation. The convolutions run in `dtype`;
        # the residual stream x stays float32, so bf16/fp16 round each conv's output once instead of rounding the
        # running sum at every add (on speech: 0.7 instead of 1.0 dB log-mel distance to fp32 in bf16).
        for j, (c1, c2) in enumerate(pairs):
            y = c2(c1(self._activated(x), "leaky_relu"))
            x = x + y if j == 0 else x.add_(y)  # the first add makes this block's own buffer (x is shared)
        return x

    def forward(self, x: torch.Tensor, f0: torch.Tensor | None = None, g: torch.Tensor | None = None,
                n_res: int | None = None) -> torch.Tensor:
        source = None
        if self.nsf:
            if f0 is None:
                raise ValueError("this RVC model uses pitch: pass `nsff0`/`pitchf` (F0 in Hz per frame)")
            source = self.m_source(f0, self.upp).transpose(1, 2)  # [B, 1, T·upp] float32, reference RNG draw
            if n_res is not None and n_res * self.upp != source.shape[-1]:
                source = F.interpolate(source, size=n_res * self.upp, mode="linear")
            source = source.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # float32
        if n_res is not None and n_res != x.shape[-1]:
            x = F.interpolate(x, size=n_res, mode="linear")
        x = self.conv_pre(x.to(self.conv_pre.weight.dtype))
        if g is not None and self.cond is not None:
            x = x + self.cond(g.to(self.cond.weight.dtype))
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # [B, C, 1, T] float32
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu_(x.to(self.dtype), LRELU_SLOPE))  # x is this function's own buffer
            # back to the float32 residual stream, with the float32 excitation added in the same pass
            x = x + self.noise_convs[i](source) if source is not None else x.float()
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = self._resblock(x, blocks[0])
            for pairs in blocks[1:]:
                total += self._resblock(x, pairs)
            x = total  # n times the stage's output: the next conv's kernel carries the 1/n
        audio = self.conv_post(F.leaky_relu_(x.to(self.dtype), OUTPUT_SLOPE), "tanh")  # [B, 1, 1, T·upp]
        return audio.reshape(audio.shape[0], 1, -1).float()


def optimize_for_inference(
    model: nn.Module,
    dtype: torch.dtype | str = torch.float32,
    *,
    device: torch.device | str | None = None,
    compile: bool = False,
) -> RVCSynthesizer:
    """A fast inference copy of an RVC synthesizer (see the module docstring); the caller's model is not changed.

    `model`: an `RVCSynthesizer`, a PEFT model of one or a `VoiceBank`'s base (active adapters are merged into the
    copy). `dtype`: the decoder's precision, torch.float32 / torch.bfloat16 / torch.float16 or "fp32"/"bf16"/"fp16";
    `check_precision` rejects combinations that would be slow (fp16 on a CPU, bf16 without native support).
    `device`: where the copy lives (default: the model's). `compile`: wrap the decoder in `torch.compile`
    (inductor, dynamic shapes, PyTorch's own random draws so seeded output is unchanged). Off by default: on a
    2-core CPU the first call compiled for about 2 minutes and the result was slower than the eager decoder
    (inductor emits oneDNN fused convolutions, measured no faster here); it is there for GPUs, where it can fuse
    the element-wise work between cuDNN convolutions (not measured: no GPU was available).
    Returns an `RVCSynthesizer` whose `infer(...)` takes and returns what `RVCSynthesizer.infer` does.
    """
    dtype = precision_dtype(dtype)
    plain = plain_synthesizer(model)
    if device is not None:
        plain = plain.to(device)
    check_precision(dtype, next(plain.parameters()).device)
    decoder = FastDecoder(plain.dec, dtype)
    if compile:
        # fallback_random: inductor would otherwise draw the NSF noise with its own generator, and a seeded
        # conversion would no longer match the eager paths.
        decoder = torch.compile(decoder, dynamic=True, options={"fallback_random": True})
    plain.dec = decoder
    plain.fast_path_dtype = dtype
    return plain
