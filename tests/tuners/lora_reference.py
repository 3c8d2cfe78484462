"""Independent float64 references for rvc_peft's 1-D conv LoRA layers (shared by the precision and blend tests).

Everything here is rebuilt from the layers' raw `lora_A` / `lora_B` tensors and the base geometry with stock torch
ops, without calling the layer's own `get_delta_weight`, `forward` or scaling bookkeeping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import LoraLayer
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import LoraConv1d, LoraConvTranspose1d


class RVCStyleHolder(nn.Sequential):
    """A one-layer model declared an RVC network, so grouped convs get rvc_peft's layer."""

    rvc_peft_rvc_network = True


def wrap_layer(
    base: nn.Module, configs: dict[str, LoraConfig], *, force_rvc_conv1d: bool = False, autocast_adapter_dtype: bool = True,
) -> tuple[nn.Module, LoraLayer]:
    """`get_peft_model` on a one-layer RVC-style model, one adapter per entry of `configs` (the first is active).

    `force_rvc_conv1d`: register `LoraConv1d` as a custom module, so a plain Conv1d (which PEFT's layer handles by
    default) gets rvc_peft's layer. Returns (peft model, the LoRA layer).
    """
    names = list(configs)
    for config in configs.values():
        config.target_modules = {"layer"}  # a set, as LoraConfig.__post_init__ would make it
        if force_rvc_conv1d:
            config._register_custom_module({nn.Conv1d: LoraConv1d})
    model = get_peft_model(RVCStyleHolder(OrderedDict(layer=base)), configs[names[0]], adapter_name=names[0],
                           autocast_adapter_dtype=autocast_adapter_dtype)
    for name in names[1:]:
        model.add_adapter(name, configs[name], autocast_adapter_dtype=autocast_adapter_dtype)
    return model, model.base_model.model.layer


# every 1-D conv geometry the tests cover (all get rvc_peft's layers; "conv_plain" through `force_rvc_conv1d`)
LAYERS: dict[str, Callable[[], nn.Module]] = {
    "conv_plain": lambda: nn.Conv1d(8, 6, 5, padding=2),
    "conv_dilated": lambda: nn.Conv1d(8, 8, 3, dilation=3, padding=3),
    "conv_dilated_reflect": lambda: nn.Conv1d(8, 8, 3, dilation=2, padding=2, padding_mode="reflect"),
    "conv_grouped": lambda: nn.Conv1d(8, 6, 3, padding=1, groups=2),
    "conv_weight_norm": lambda: weight_norm(nn.Conv1d(8, 8, 5, dilation=2, padding=4)),
    "conv_legacy_weight_norm": lambda: torch.nn.utils.weight_norm(nn.Conv1d(8, 8, 3, padding=1)),
    "convT_plain": lambda: nn.ConvTranspose1d(8, 6, 16, 8, 4),
    "convT_grouped": lambda: nn.ConvTranspose1d(8, 6, 4, 2, 1, groups=2),
    "convT_weight_norm": lambda: weight_norm(nn.ConvTranspose1d(6, 4, 4, 2, 1)),
}
# the adapters every layer gets: (rank, alpha, rslora) and the scaling PEFT's convention gives them
ADAPTERS = {"voice1": (4, 8, False), "voice2": (2, 6, True)}
SCALES = {"voice1": 8 / 4, "voice2": 6 / math.sqrt(2)}


def adapted_layer(name: str, dtype: torch.dtype, autocast_adapter_dtype: bool = False) -> tuple[nn.Module, LoraLayer]:
    """The layer `name` in `dtype` with two seeded random adapters ("voice1" active), in eval mode.

    autocast_adapter_dtype=False keeps the LoRA weights in `dtype`; True is PEFT's default (float32 LoRA weights on a
    half-precision base).
    """
    torch.manual_seed(0)
    base = LAYERS[name]().to(dtype)
    configs = {adapter: LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora)
               for adapter, (r, alpha, rslora) in ADAPTERS.items()}
    model, layer = wrap_layer(base, configs, force_rvc_conv1d=name == "conv_plain",
                              autocast_adapter_dtype=autocast_adapter_dtype)
    randomize_lora(model, scale=0.2)
    if not isinstance(layer, LoraConvTranspose1d if name.startswith("convT") else LoraConv1d):
        raise TypeError(f"{name}: got {type(layer).__name__}, not rvc_peft's layer")
    return model.eval(), layer


def reference_delta(layer: LoraLayer, adapter: str, scale: float) -> torch.Tensor:
    """ΔW = scale · B∘A in float64, composed group by group as matrix products.

    Conv1d: (out, in/g, k); ConvTranspose1d: (in, out/g, k) — the base weight's layout. `lora_A` is rank-first
    `(r, in/g, k)` for both kinds, `lora_B` is `(out, r/g, 1)`.
    """
    base = layer.get_base_layer()
    groups = base.groups
    weight_A = layer.lora_A[adapter].weight.detach().double()
    weight_B = layer.lora_B[adapter].weight.detach().double()[..., 0]
    rank_per_group, out_per_group = weight_A.shape[0] // groups, weight_B.shape[0] // groups
    blocks = []
    for group in range(groups):
        a = weight_A[group * rank_per_group:(group + 1) * rank_per_group]  # (r/g, in/g, k)
        b = weight_B[group * out_per_group:(group + 1) * out_per_group]  # (out/g, r/g)
        kernel = (b @ a.flatten(1)).reshape(out_per_group, *a.shape[1:])  # (out/g, in/g, k)
        blocks.append(kernel.transpose(0, 1) if isinstance(base, nn.ConvTranspose1d) else kernel)
    return torch.cat(blocks) * scale


def _conv(base: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          out_channels_groups: int | None = None) -> torch.Tensor:
    """The base layer's convolution (its geometry) with another weight, in the weight's dtype."""
    groups = base.groups if out_channels_groups is None else out_channels_groups
    if isinstance(base, nn.ConvTranspose1d):
        return F.conv_transpose1d(x, weight, bias, base.stride, base.padding, base.output_padding, groups,
                                  base.dilation)
    if base.padding_mode != "zeros":
        x = F.pad(x, (base.padding[0], base.padding[0]), mode=base.padding_mode)
        return F.conv1d(x, weight, bias, base.stride, 0, base.dilation, groups)
    return F.conv1d(x, weight, bias, base.stride, base.padding, base.dilation, groups)


def reference_branch(layer: LoraLayer, x: torch.Tensor, adapter: str, scale: float) -> torch.Tensor:
    """scale · B(A(x)) in float64 as two stock convolutions: A with the base geometry, then the pointwise B."""
    base = layer.get_base_layer()
    groups = base.groups
    weight_A = layer.lora_A[adapter].weight.detach().double()
    if isinstance(base, nn.ConvTranspose1d):
        # rank-first (r, in/g, k) -> torch's transposed layout (in, r/g, k), group by group
        rank_per_group = weight_A.shape[0] // groups
        weight_A = torch.cat([weight_A[g * rank_per_group:(g + 1) * rank_per_group].transpose(0, 1)
                              for g in range(groups)])
    hidden = _conv(base, x.double(), weight_A, None)
    return F.conv1d(hidden, layer.lora_B[adapter].weight.detach().double(), None, groups=groups) * scale


def reference_base(layer: LoraLayer, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The base layer in float64 (with `weight` instead of its own if given)."""
    base = layer.get_base_layer()
    weight = base.weight.detach() if weight is None else weight
    bias = None if base.bias is None else base.bias.detach().double()
    return _conv(base, x.double(), weight.double(), bias)
