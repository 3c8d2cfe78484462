"""LoRA layers for `nn.ConvTranspose1d` and `nn.Conv1d`, following PEFT's `LoraLayer` conventions.

PEFT 0.21 has no LoRA for `ConvTranspose1d` (RVC's upsampling layers); its `Conv1d` LoRA ignores `dilation`,
`padding_mode` and (for `lora_A`) `groups`, and its merge (`weight.data += delta`) is silently lost on weight-normed
layers. These layers fix all of that while keeping PEFT's parameter layout:

* `lora_A` carries the full geometry of the base layer (kernel, stride, padding, output padding, dilation, groups,
  padding mode) and is stored **rank-first**, `(r, in/groups, k)`, like PEFT's conv `lora_A`;
* `lora_B` is a pointwise grouped `Conv1d(r, out, 1, groups=groups)`, weight `(out, r/groups, 1)`.

`B(A(x))` is then exactly one conv (transposed conv) of the base geometry whose kernel is `get_delta_weight()`, so
merging is exact and grouped layers stay mergeable. Merging *assigns* the new weight (`module.weight = W + ΔW`), which
goes through the weight-norm re-parametrisation (g, v are re-derived) instead of being silently dropped.

Where these layers are used (`dispatch_rvc`, `needs_rvc_conv1d`): `ConvTranspose1d` always gets
`LoraConvTranspose1d` (PEFT has no layer for it). On RVC networks (`provenance.is_rvc_network`) a `Conv1d` gets
`LoraConv1d` when PEFT's layer would be wrong: dilated or non-"zeros"-padded (PEFT's crashes or computes the wrong
output), grouped (PEFT's cannot merge) or weight-normed (PEFT's merge would be lost). On any other model `Conv1d`
targets keep PEFT's layer, exactly as stock PEFT, unless the config is an `RVCLoraConfig`, which opts in through
PEFT's custom-module hook (`conv1d_layer_factory`): then dilated, non-"zeros"-padded and weight-normed ones get ours,
while grouped ones keep PEFT's (its `lora_A` is `(r, in, k)`, not our `(r, in/g, k)`, so adapters made with stock
PEFT keep loading, and PEFT refuses to merge them with a clear error rather than silently).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora.config import LoraConfig
from peft.tuners.lora.layer import VARIANT_KWARG_KEYS, LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from peft.utils.warning import PeftWarning
from torch import nn
from torch.nn.utils import parametrize

from ...models.weight_norm import assign_weight, legacy_weight_norm_hooks

SUPPORTED_INITS = (True, False, "gaussian")


# --- the rank-first transposed conv used as lora_A --------------------------------------------------------------

class RankFirstConvTranspose1d(nn.Module):
    """`lora_A` of a transposed-conv LoRA: a bias-free `ConvTranspose1d(in → r)` with the base layer's geometry.

    The weight is stored rank-first, `(r, in/groups, k)`, so that generic PEFT code that reads the rank from
    `lora_A.weight.shape[0]` (weighted "cat" merges, hot-swapping, saved-state checks) works. `forward` views it back
    to PyTorch's transposed-conv layout `(in, r/groups, k)`.

    forward(x [B, in, T], output_padding) -> [B, r, T'] with T' as for the base layer.
    """

    def __init__(
        self, in_channels: int, rank: int, kernel_size: int, stride: int, padding: int, dilation: int, groups: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels, self.rank, self.groups = in_channels, rank, groups
        self.kernel_size, self.stride, self.padding = (kernel_size,), (stride,), (padding,)
        self.dilation, self.output_padding = (dilation,), (output_padding,)
        self.weight = nn.Parameter(torch.empty(rank, in_channels // groups, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fan_in = in/groups · k, the same convention as PEFT's conv lora_A
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def transposed_weight(self) -> torch.Tensor:
        """The weight in `conv_transpose1d` layout: (r, in/g, k) -> (in, r/g, k), group-major on both axes."""
        r, in_per_group, k = self.weight.shape
        g = self.groups
        return self.weight.view(g, r // g, in_per_group, k).transpose(1, 2).reshape(g * in_per_group, r // g, k)

    def forward(self, x: torch.Tensor, output_padding: tuple[int, ...] | list[int] | None = None) -> torch.Tensor:
        padding_out = self.output_padding if output_padding is None else tuple(output_padding)
        return F.conv_transpose1d(
            x, self.transposed_weight(), None, self.stride, self.padding, padding_out, self.groups, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.rank}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, output_padding={self.output_padding}, dilation={self.dilation}, "
            f"groups={self.groups}, weight=rank-first {tuple(self.weight.shape)}"
        )


# --- the shared LoRA logic ------------------------------------------------------------------------------------------

class _LoraConv1dBase(nn.Module, LoraLayer):
    """Shared code of the two 1-D conv LoRA layers (update, merge by assignment, unmerge, delta weight)."""

    layer_kind = "Conv1d"

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        config: LoraConfig,
        r: int = 0,
        lora_alpha: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer, **kwargs)
        if kwargs.get("use_alora", False):
            raise ValueError("aLoRA does not support adapting conv layers.")
        self.fan_in_fan_out = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    # PEFT calls this from LoraLayer.__init__; the default warns "Unsupported layer type" for ConvTranspose1d.
    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        return module.in_channels, module.out_channels

    @property
    def lora_variants(self) -> dict[tuple[str, ...], Any]:
        return {(): None}

    def _describe_target(self, kwargs: dict[str, Any]) -> str:
        name = kwargs.get("target_name") or ""
        return f"{self.layer_kind} layer '{name}'" if name else f"{self.layer_kind} layer"

    def _check_config(self, r: int, config: LoraConfig, kwargs: dict[str, Any]) -> None:
        base = self.get_base_layer()
        where = self._describe_target(kwargs)
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        if config.use_dora:
            raise ValueError(
                f"DoRA (use_dora=True) is not supported for the {where} by rvc_peft: its magnitude vector would have "
                f"to be taken per output channel of a {self.layer_kind} weight. Use plain LoRA (use_dora=False) or "
                "exclude this layer from target_modules."
            )
        init = config.init_lora_weights
        if not any(init is option or init == option for option in SUPPORTED_INITS):
            raise ValueError(
                f"init_lora_weights={init!r} is not supported for the {where}; rvc_peft's conv LoRA supports "
                "True (Kaiming A, zero B), 'gaussian' and False."
            )
        if r % base.groups != 0:
            raise ValueError(
                f"Targeting a {self.layer_kind} with groups={base.groups} and rank {r} ({where}): the rank must be "
                "divisible by groups. Choose another rank (rank_pattern can set it per layer) or exclude the layer."
            )

    def _make_lora_A(self, r: int) -> nn.Module:
        raise NotImplementedError

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs: Any) -> None:
        self._check_config(r, config, kwargs)
        base = self.get_base_layer()
        lora_bias = config.lora_bias
        if lora_bias and getattr(base, "bias", None) is None:
            warnings.warn(
                f"`lora_bias=True` was passed but the targeted layer of type {type(base).__name__} has no bias. "
                "This means that merging LoRA weights won't be possible.",
                PeftWarning,
            )
        lora_variant = self.resolve_lora_variant(config=config)  # raises for variants these layers do not implement
        if lora_variant is not None:
            self.lora_variant[adapter_name] = lora_variant

        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        dropout = nn.Dropout(p=config.lora_dropout) if config.lora_dropout > 0.0 else nn.Identity()
        self.lora_dropout[adapter_name] = dropout
        self.lora_A[adapter_name] = self._make_lora_A(r)
        self.lora_B[adapter_name] = nn.Conv1d(r, self.out_features, 1, groups=base.groups, bias=lora_bias)
        self.lora_bias[adapter_name] = lora_bias
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if config.use_rslora else lora_alpha / r
        self.use_rslora[adapter_name] = config.use_rslora
        self.use_dora[adapter_name] = False
        if config.init_lora_weights:
            self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    # --- delta weight, merge, unmerge ----------------------------------------------------------------------------
    def _delta_from_factors(self, weight_A: torch.Tensor, weight_B: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """ΔW of `adapter` in the base weight's layout (Conv1d `(out, in/g, k)`, ConvTranspose1d `(in, out/g, k)`).

        The base layer computed with `W + ΔW` equals the base layer plus `B(A(x)) · scaling`.
        """
        weight_A = self.lora_A[adapter].weight
        weight_B = self.lora_B[adapter].weight
        dtype = weight_A.dtype
        # like PEFT: half-precision matmuls are slow (or missing) on CPU, so compute in float32 there
        cast_to_fp32 = weight_A.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16)
        if cast_to_fp32:
            weight_A, weight_B = weight_A.float(), weight_B.float()
        delta = self._delta_from_factors(weight_A, weight_B) * self.scaling[adapter]
        return delta.to(dtype) if cast_to_fp32 else delta

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Merge the active (or the named) adapters into the base weight, by assignment (weight norm survives).

        `safe_merge=True` checks the merged weight for NaN/inf before writing it.
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        base = self.get_base_layer()
        for active_adapter in adapter_names:
            if active_adapter not in self.lora_A:
                continue
            weight = base.weight.detach()
            new_weight = weight + self.get_delta_weight(active_adapter).to(weight.dtype)
            new_bias = None
            if self.lora_bias[active_adapter]:
                if getattr(base, "bias", None) is None:
                    raise RuntimeError("Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias.")
                new_bias = base.bias.detach() + self.lora_B[active_adapter].bias.detach() * self.scaling[active_adapter]
            if safe_merge and not (
                torch.isfinite(new_weight).all() and (new_bias is None or torch.isfinite(new_bias).all())
            ):
                raise ValueError(f"NaNs detected in the merged weights. The adapter {active_adapter} seems to be broken")
            assign_weight(base, new_weight)
            if new_bias is not None:
                base.bias.data.copy_(new_bias.to(base.bias.dtype))
            self.merged_adapters.append(active_adapter)

    def unmerge(self) -> None:
        """Take every merged adapter out of the base weight again (by assignment, like `merge`)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        base = self.get_base_layer()
        while self.merged_adapters:
            active_adapter = self.merged_adapters.pop()
            if active_adapter not in self.lora_A:
                continue
            weight = base.weight.detach()
            assign_weight(base, weight - self.get_delta_weight(active_adapter).to(weight.dtype))
            if self.lora_bias[active_adapter]:
                base.bias.data -= self.lora_B[active_adapter].bias.detach() * self.scaling[active_adapter]

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


class LoraConv1d(_LoraConv1dBase):
    """LoRA for `nn.Conv1d` honouring dilation, groups, padding_mode and weight norm.

    lora_A = `Conv1d(in → r)` with the base kernel/stride/padding/dilation/groups/padding_mode (weight `(r, in/g, k)`),
    lora_B = `Conv1d(r → out, 1, groups=g)`. forward(x [B, in, T]) -> [B, out, T'] exactly like the base layer.
    """

    layer_kind = "Conv1d"

    def _make_lora_A(self, r: int) -> nn.Module:
        base = self.get_base_layer()
        return nn.Conv1d(
            self.in_features, r, base.kernel_size, base.stride, base.padding, base.dilation, groups=base.groups,
            bias=False, padding_mode=base.padding_mode,
        )

    def _delta_from_factors(self, weight_A: torch.Tensor, weight_B: torch.Tensor) -> torch.Tensor:
        # A (r, in/g, k), B (out, r/g, 1) -> ΔW (out, in/g, k); group g mixes only its own rank channels
        g = self.get_base_layer().groups
        r, in_per_group, k = weight_A.shape
        out = weight_B.shape[0]
        per_group = torch.einsum(
            "goa,gaik->goik", weight_B.reshape(g, out // g, r // g), weight_A.reshape(g, r // g, in_per_group, k)
        )
        return per_group.reshape(out, in_per_group, k)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        for key in VARIANT_KWARG_KEYS:
            kwargs.pop(key, None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        result_dtype = result.dtype
        for active_adapter in self.active_adapters:
            if active_adapter not in self.lora_A:
                continue
            lora_A, lora_B = self.lora_A[active_adapter], self.lora_B[active_adapter]
            x = self._cast_input_dtype(x, lora_A.weight.dtype)
            result = result + lora_B(lora_A(self.lora_dropout[active_adapter](x))) * self.scaling[active_adapter]
        return result.to(result_dtype)


class LoraConvTranspose1d(_LoraConv1dBase):
    """LoRA for `nn.ConvTranspose1d` (RVC's upsampling layers) honouring stride, padding, output_padding /
    `output_size`, dilation, groups and weight norm.

    lora_A = rank-first transposed conv `in → r` with the base geometry (`RankFirstConvTranspose1d`),
    lora_B = `Conv1d(r → out, 1, groups=g)`.
    forward(x [B, in, T], output_size=None) -> [B, out, T'] exactly like the base layer.
    """

    layer_kind = "ConvTranspose1d"

    def _make_lora_A(self, r: int) -> nn.Module:
        base = self.get_base_layer()
        if base.padding_mode != "zeros":
            raise ValueError(f"ConvTranspose1d with padding_mode={base.padding_mode!r} is not supported by PyTorch")
        return RankFirstConvTranspose1d(
            self.in_features, r, base.kernel_size[0], base.stride[0], base.padding[0], base.dilation[0], base.groups,
            base.output_padding[0],
        )

    def _delta_from_factors(self, weight_A: torch.Tensor, weight_B: torch.Tensor) -> torch.Tensor:
        # A (r, in/g, k), B (out, r/g, 1) -> ΔW (in, out/g, k):
        # ΔW[g·in/g + i, o, j] = Σ_a A[g·r/g + a, i, j] · B[g·out/g + o, a]
        g = self.get_base_layer().groups
        r, in_per_group, k = weight_A.shape
        out = weight_B.shape[0]
        per_group = torch.einsum(
            "gaik,goa->giok", weight_A.reshape(g, r // g, in_per_group, k), weight_B.reshape(g, out // g, r // g)
        )
        return per_group.reshape(g * in_per_group, out // g, k)

    def _lora_output_padding(self, x: torch.Tensor, output_size: list[int] | None) -> list[int]:
        base = self.get_base_layer()
        return base._output_padding(x, output_size, base.stride, base.padding, base.kernel_size, 1, base.dilation)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        for key in VARIANT_KWARG_KEYS:
            kwargs.pop(key, None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, output_size)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, output_size=output_size, adapter_names=adapter_names)
        result = self.base_layer(x, output_size)
        if self.merged:
            return result
        result_dtype = result.dtype
        output_padding = self._lora_output_padding(x, output_size)
        for active_adapter in self.active_adapters:
            if active_adapter not in self.lora_A:
                continue
            lora_A, lora_B = self.lora_A[active_adapter], self.lora_B[active_adapter]
            x = self._cast_input_dtype(x, lora_A.weight.dtype)
            lora_out = lora_B(lora_A(self.lora_dropout[active_adapter](x), output_padding))
            result = result + lora_out * self.scaling[active_adapter]
        return result.to(result_dtype)

    def _mixed_batch_forward(  # type: ignore[override]
        self, x: torch.Tensor, *, adapter_names: list[str], output_size: list[int] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """PEFT's mixed-batch inference: row i of the batch uses adapter `adapter_names[i]` ("__base__": none)."""
        result = self.base_layer(x, output_size)
        result_dtype = result.dtype
        output_padding = self._lora_output_padding(x, output_size)
        for adapter in set(adapter_names):
            if adapter == "__base__" or adapter not in self.lora_A:
                continue
            rows = [i for i, name in enumerate(adapter_names) if name == adapter]
            lora_A, lora_B = self.lora_A[adapter], self.lora_B[adapter]
            sub_batch = x[rows].to(lora_A.weight.dtype)
            lora_out = lora_B(lora_A(self.lora_dropout[adapter](sub_batch), output_padding)) * self.scaling[adapter]
            result[rows] += lora_out.to(result_dtype)
        return result


# --- dispatch -------------------------------------------------------------------------------------------------------

def needs_rvc_conv1d(layer: nn.Conv1d, *, rvc_network: bool) -> bool:
    """True if this Conv1d target gets rvc_peft's `LoraConv1d` rather than PEFT's `lora.Conv1d` (see the module
    docstring). `rvc_network`: whether the model being adapted is an RVC network (`provenance.is_rvc_network`).

    * dilation != 1 or padding_mode != "zeros": always ours (PEFT's `lora_A` drops both: a shape crash / wrong output);
    * groups != 1: ours on RVC networks (mergeable); elsewhere PEFT's (correct forward, merging refused loudly, and
      its parameter layout is the one stock-PEFT adapters were saved with);
    * weight-normed: ours (same parameters as PEFT's for groups=1, and PEFT's merge is lost without a warning);
    * anything else: PEFT's (identical parameters and outputs).
    """
    if layer.dilation[0] != 1 or layer.padding_mode != "zeros":
        return True
    if layer.groups != 1:
        return rvc_network
    return parametrize.is_parametrized(layer, "weight") or bool(legacy_weight_norm_hooks(layer))


def dispatch_rvc(
    target: nn.Module, adapter_name: str, config: LoraConfig, *, rvc_network: bool = False, **kwargs: Any
) -> nn.Module | None:
    """Build an rvc_peft LoRA layer for `target`, or return None to leave it to PEFT's dispatchers.

    `rvc_network`: whether `target` belongs to an RVC network; elsewhere only `ConvTranspose1d` gets our layer.
    """
    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if isinstance(base, nn.ConvTranspose1d):
        return LoraConvTranspose1d(target, adapter_name, config=config, **kwargs)
    if rvc_network and isinstance(base, nn.Conv1d) and needs_rvc_conv1d(base, rvc_network=True):
        return LoraConv1d(target, adapter_name, config=config, **kwargs)
    return None


def conv1d_layer_factory(target: nn.Module, adapter_name: str, config: LoraConfig, **kwargs: Any) -> nn.Module:
    """LoRA layer for a Conv1d target via PEFT's custom-module hook: ours where PEFT's is wrong, else PEFT's.

    Registered by `RVCLoraConfig`: the opt-in to our layers on non-RVC models, and the fallback where the registered
    tuner is bypassed (PEFT's mixed models, `stock_peft()`). PEFT passes no model here, so grouped convs follow the
    non-RVC rule: PEFT's layer.
    """
    from peft.tuners.lora.layer import Conv1d as PeftLoraConv1d

    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    layer_cls = LoraConv1d if needs_rvc_conv1d(base, rvc_network=False) else PeftLoraConv1d
    return layer_cls(target, adapter_name, config=config, **kwargs)
