"""Weight normalisation for RVC layers: building, folding away, and the two on-disk key spellings.

RVC's files store weight-normed layers with the legacy `torch.nn.utils.weight_norm` names
(`<prefix>.weight_g`, `<prefix>.weight_v`); modules built with `torch.nn.utils.parametrizations.weight_norm`
name the same tensors `<prefix>.parametrizations.weight.original0/1`. Effective weight = g · v / ‖v‖, the
norm over every axis except dim 0 (for ConvTranspose1d dim 0 is the *input* channel axis).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _parametrized_weight_norm
from torch.nn.utils.weight_norm import WeightNorm

LEGACY_SUFFIXES = (".weight_g", ".weight_v")
PARAMETRIZED_SUFFIXES = (".parametrizations.weight.original0", ".parametrizations.weight.original1")


def weight_norm(module: nn.Module) -> nn.Module:
    """Wrap `module.weight` in weight normalisation (dim 0), RVC's only weight-norm setting."""
    return _parametrized_weight_norm(module, name="weight", dim=0)


def has_weight_norm(module: nn.Module) -> bool:
    """True if `module.weight` is weight-normed, with either the parametrization or the legacy hook."""
    if parametrize.is_parametrized(module, "weight"):
        return True
    return bool(legacy_weight_norm_hooks(module))


def legacy_weight_norm_hooks(module: nn.Module) -> list[WeightNorm]:
    """The legacy `torch.nn.utils.weight_norm` hooks registered on `module` (one per weight-normed parameter)."""
    return [hook for hook in module._forward_pre_hooks.values() if isinstance(hook, WeightNorm)]


def refresh_legacy_weight_norm(model: nn.Module) -> None:
    """Recompute `module.weight` from (g, v) for every legacy weight-normed module of `model`.

    A legacy weight-normed module's `weight` is a plain attribute refreshed only by its forward pre-hook. After a
    transformers 5 meta-device load it is still on `meta` until the first forward, and PEFT puts new LoRA weights on
    `base_layer.weight.device`, i.e. on meta. Refreshing first keeps the adapters on the real device.
    """
    for module in model.modules():
        for hook in legacy_weight_norm_hooks(module):
            g = getattr(module, hook.name + "_g", None)
            if g is not None and g.device.type != "meta":
                setattr(module, hook.name, hook.compute_weight(module))


def assign_weight(module: nn.Module, new_weight: torch.Tensor) -> None:
    """Set the effective `module.weight` to `new_weight`, whatever parametrises it.

    * `parametrizations.weight_norm` (or any parametrization with a right inverse): assignment runs the right
      inverse, so (g, v) become (‖W'‖, W') and the layer keeps its weight norm;
    * legacy `weight_norm`: v ← W', g ← ‖W'‖ over all axes but the hook's dim, then `weight` is recomputed;
    * plain weight: copied in place (the Parameter object, and optimizer references to it, are kept).
    """
    with torch.no_grad():
        if parametrize.is_parametrized(module, "weight"):
            module.weight = new_weight.to(module.weight.dtype)
            return
        hooks = [hook for hook in legacy_weight_norm_hooks(module) if hook.name == "weight"]
        if hooks:
            hook = hooks[0]
            g, v = module.weight_g, module.weight_v
            v.copy_(new_weight.to(v.dtype))
            g.copy_(torch.norm_except_dim(v, 2, hook.dim).to(g.dtype))
            module.weight = hook.compute_weight(module)
            return
        module.weight.data.copy_(new_weight.to(module.weight.dtype))


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Remove every weight norm in `model` (in place), leaving plain `weight` parameters.

    The folded weight is the current effective weight g·v/‖v‖, so outputs do not change. This is
    the state LoRA is injected into: a plain weight can be merged into, a (g, v) pair cannot.
    Returns `model` for chaining.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            # Not remove_parametrizations: deep copies share the dynamically created parametrized class, and
            # removing the property from it would break every copy. Restore the plain class on this module only.
            weight = module.weight.detach().clone()
            requires_grad = module.parametrizations.weight.original1.requires_grad
            delattr(module, "parametrizations")
            module.__class__ = module.__class__.__bases__[0]
            module.register_parameter("weight", nn.Parameter(weight, requires_grad=requires_grad))
        else:
            for hook in legacy_weight_norm_hooks(module):
                torch.nn.utils.remove_weight_norm(module, hook.name)
    return model


def split_weight(weight: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-derive a weight-norm pair (g, v) from a plain weight: v = W and g = ‖W‖ over all axes but `dim`.

    g·v/‖v‖ then reproduces W exactly (up to rounding); used to export folded or merged models in
    RVC's weight_g/weight_v layout.
    """
    return torch.norm_except_dim(weight, 2, dim), weight.clone()


def to_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `parametrizations.weight.original0/1` keys to RVC's `weight_g`/`weight_v` spelling."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for new, old in zip(LEGACY_SUFFIXES, PARAMETRIZED_SUFFIXES):
            if key.endswith(old):
                key = key[: -len(old)] + new
                break
        out[key] = value
    return out


def to_parametrized_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy `weight_g`/`weight_v` keys to the `parametrizations.weight.original0/1` spelling."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in zip(LEGACY_SUFFIXES, PARAMETRIZED_SUFFIXES):
            if key.endswith(old):
                key = key[: -len(old)] + new
                break
        out[key] = value
    return out
