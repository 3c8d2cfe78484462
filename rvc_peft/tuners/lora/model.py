"""`RVCLoraModel`: the LoRA tuner entry rvc_peft installs in PEFT — PEFT's `LoraModel` for every model, plus RVC's.

`RVCLoraModel(model, config, adapter_name)` returns a plain `peft.LoraModel` for any model that is not an RVC network
(`provenance.is_rvc_network`) and has no `nn.ConvTranspose1d`: after `import rvc_peft` PEFT behaves exactly as stock
on such models. Otherwise it is an `RVCLoraModel`, PEFT's `LoraModel` (adapters stay `peft_type: LORA`) plus:

* `nn.ConvTranspose1d` targets get `LoraConvTranspose1d` on any model (stock PEFT refuses the layer type); on RVC
  networks `Conv1d` targets that PEFT's layer gets wrong (dilated, non-zero padding mode, grouped, weight-normed) get
  `LoraConv1d` (see `layer.needs_rvc_conv1d`). All other modules go to PEFT unchanged;
* weighted adapter combinations ("cat", "svd" and its variants) are correct for these layers, grouped ones included
  (SVD per group; concatenation group by group); PEFT's own layers combine as in stock PEFT;
* on an RVC model: string presets in `target_modules` ("generator", "all", ...), the default target "generator",
  provenance facts recorded on injection and checked when an adapter made for another base is loaded, and an
  adapter-vs-model check that fails with a clear message instead of a size-mismatch crash or a silently plain base;
* legacy `torch.nn.utils.weight_norm` weights are refreshed before injection (transformers 5 meta-device loading).

The PEFT internals this relies on are listed, with the reason for each, in `rvc_peft.tuners.peft_internals`.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch
from peft.tuners.lora.config import LoraConfig
from peft.tuners.lora.layer import Conv1d as PeftLoraConv1d
from peft.tuners.lora.model import LoraModel
from peft.utils.merge_utils import dare_linear, dare_ties, magnitude_prune, task_arithmetic, ties
from torch import nn

from ...models.weight_norm import refresh_legacy_weight_norm
from ..provenance import (
    check_adapter_state,
    check_compatible,
    facts_of_config,
    forget_fingerprint,
    is_rvc_model,
    is_rvc_network,
    rvc_facts,
    store_facts,
)
from .config import RVCLoraConfig
from .layer import (
    LoraConvTranspose1d,
    _LoraConv1dBase,
    conv1d_layer_factory,
    dispatch_rvc,
)
from .presets import DEFAULT_PRESET, is_target_preset, target_modules_for

_OWN_FALLBACK_LAYERS = (LoraConvTranspose1d, conv1d_layer_factory)  # what RVCLoraConfig registers


def _custom_module_claims(config: Any, target: nn.Module) -> bool:
    """True if the user registered a custom LoRA layer (`LoraConfig._register_custom_module`) for this target.

    RVCLoraConfig's own registrations (its fallback for bypassed tuners) do not count: this tuner knows the model and
    decides itself, the fallback factory cannot (PEFT passes it no model).
    """
    custom = getattr(config, "_custom_modules", None)
    if not custom:
        return False
    base = target.get_base_layer() if hasattr(target, "get_base_layer") else target
    return any(isinstance(base, key) and layer not in _OWN_FALLBACK_LAYERS for key, layer in custom.items())


def _adapter_summary(model: nn.Module, adapter_name: str) -> dict[str, Any]:
    """Parameter count and targeted module groups of one adapter (for the facts and the model card)."""
    num_parameters = sum(
        param.numel() for name, param in model.named_parameters()
        if ".lora_" in name and f".{adapter_name}." in f"{name}."
    )
    groups: dict[str, int] = {}
    for name, module in model.named_modules():
        lora_A = getattr(module, "lora_A", None)
        lora_emb = getattr(module, "lora_embedding_A", None)
        if (isinstance(lora_A, nn.ModuleDict) and adapter_name in lora_A) or (
            isinstance(lora_emb, nn.ParameterDict) and adapter_name in lora_emb
        ):
            group = re.sub(r"\.\d+(?=\.|$)", "", name)
            groups[group] = groups.get(group, 0) + 1
    return {"num_parameters": int(num_parameters), "num_layers": sum(groups.values()), "target_groups": groups}


def _delta_matrices(target: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """ΔW of a 1-D conv LoRA layer as one matrix per group: [g, out/g, in/g·k]."""
    groups = target.get_base_layer().groups
    if isinstance(target, LoraConvTranspose1d):  # ΔW (in, out/g, k)
        in_channels, out_per_group, k = delta.shape
        per_group = delta.reshape(groups, in_channels // groups, out_per_group, k).permute(0, 2, 1, 3)
        return per_group.reshape(groups, out_per_group, (in_channels // groups) * k)
    out_channels, in_per_group, k = delta.shape  # Conv1d ΔW (out, in/g, k)
    return delta.reshape(groups, out_channels // groups, in_per_group * k)


def _made_for(config: Any) -> str:
    """"made for base 'f0G40k.pth'", or "saved without RVC facts" when the facts were only filled in on loading."""
    if config.__dict__.get("_rvc_facts_from_model"):
        return "saved without RVC facts, so its base is unknown"
    facts = facts_of_config(config) or {}
    name = (facts.get("base_model") or {}).get("name_or_path") or config.base_model_name_or_path or "unknown"
    return f"made for base '{name}'"


def needs_rvc_tuner(model: nn.Module, peft_config: Any = None) -> bool:
    """True if `model` gets `RVCLoraModel` (else stock PEFT's `LoraModel`): an RVC network, a model with a
    `ConvTranspose1d`, or any model an RVC adapter (a config carrying RVC facts) is loaded onto, so that the adapter
    is refused with a clear message instead of a size-mismatch crash."""
    configs = peft_config.values() if isinstance(peft_config, dict) else [peft_config]
    return (
        is_rvc_network(model)
        or any(isinstance(module, nn.ConvTranspose1d) for module in model.modules())
        or any(config is not None and facts_of_config(config) is not None for config in configs)
    )


class RVCLoraModel(LoraModel):
    """The LoRA tuner rvc_peft installs for `PeftType.LORA` (see the module docstring)."""

    def __new__(cls, model: nn.Module | None = None, *args: Any, **kwargs: Any) -> LoraModel:
        # PEFT builds its tuner as `PEFT_TYPE_TO_TUNER_MAPPING[peft_type](model, config, adapter_name, ...)`. Returning
        # a stock LoraModel here (not an instance of cls, so Python does not run our __init__ on it) keeps every
        # other model on PEFT's own code path.
        peft_config = args[0] if args else kwargs.get("peft_config")
        # (copy.deepcopy and pickle call __new__ with no arguments: they rebuild an existing tuner of this class)
        if cls is RVCLoraModel and model is not None and not needs_rvc_tuner(model, peft_config):
            return LoraModel(model, *args, **kwargs)
        return super().__new__(cls)

    # --- layer creation -------------------------------------------------------------------------------------------
    # Whether the model being injected is an RVC network (grouped Conv1d layers then get our layer). PEFT's
    # `_create_and_replace` calls `self._create_new_module(config, name, target, **kwargs)` without the model, so
    # `inject_adapter` records it on the tuner and `_create_new_module` is an instance method (PEFT's is a
    # staticmethod; calling it through `self` binds ours all the same). False, PEFT's own choice, until recorded.
    _rvc_network: bool = False

    def _create_new_module(  # type: ignore[override]
        self, lora_config: Any, adapter_name: str, target: nn.Module, **kwargs: Any
    ) -> nn.Module:
        if kwargs.get("parameter_name") is None and not _custom_module_claims(lora_config, target):
            new_module = dispatch_rvc(target, adapter_name, lora_config, rvc_network=self._rvc_network, **kwargs)
            if new_module is not None:
                return new_module
        return LoraModel._create_new_module(lora_config, adapter_name, target, **kwargs)

    def _prepare_adapter_config(self, peft_config: Any, model_config: dict) -> Any:
        if model_config.get("model_type") == "rvc":
            if peft_config.target_modules is None and not peft_config.target_parameters:
                peft_config.target_modules = target_modules_for(DEFAULT_PRESET)
            elif is_target_preset(peft_config.target_modules):
                peft_config.target_modules = target_modules_for(peft_config.target_modules)
        return super()._prepare_adapter_config(peft_config, model_config)

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        refresh_legacy_weight_norm(model)
        self._rvc_network = is_rvc_network(model)
        config = self.peft_config[adapter_name]
        facts = facts_of_config(config)
        if facts is not None:  # an adapter that was made for an RVC base: check it fits this one
            check_compatible(facts, model, adapter_name)
            facts = copy.deepcopy(facts)  # add_weighted_adapter copies configs shallowly: never share the dict
        rvc = is_rvc_model(model)
        if rvc:
            if type(config) is LoraConfig:
                # same fields, so this only adds behaviour: saving writes rvc_adapter.json and the model card
                config.__class__ = RVCLoraConfig
            model_name = getattr(model, "name_or_path", None) or None
            chosen = config.base_model_name_or_path
            if facts is None:
                facts = rvc_facts(model)
                # loaded adapters without facts get this model's: error messages must not claim it was made for it
                config.__dict__["_rvc_facts_from_model"] = True
                if chosen and chosen != model_name:  # the user named the base explicitly: keep that name
                    facts["base_model"]["name_or_path"] = chosen
            # The name lives in the RVC facts and is written to adapter_config.json by RVCLoraConfig.save_pretrained.
            # Keeping the field empty in memory stops PEFT's save-time "was the vocabulary resized?" check, which
            # looks the name up on the Hub (an RVC model has no vocabulary; for a file name it only warns).
            config.base_model_name_or_path = None
            config.__dict__["_rvc_model_name"] = model_name
        super().inject_adapter(
            model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype, low_cpu_mem_usage=low_cpu_mem_usage,
            state_dict=state_dict,
        )
        if rvc:
            facts["adapter"] = _adapter_summary(model, adapter_name)
            store_facts(config, facts, model)

    # --- loading --------------------------------------------------------------------------------------------------
    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: Any, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        if not is_rvc_network(model):
            return remapped
        # Every PEFT load path (PeftModel.from_pretrained, load_adapter, transformers' load_adapter) passes here with
        # the file's tensors: one place to refuse missing or stray keys (PEFT only warns, and the voice would come
        # out as the plain base), wrong shapes (torch's raw size-mismatch traceback) and NaN/inf or integer weights.
        check_adapter_state(model, adapter_name, remapped, _made_for(config))
        return remapped

    # --- merging ----------------------------------------------------------------------------------------------------
    def _unload_and_optionally_merge(
        self, merge: bool = True, progressbar: bool = False, safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        model = super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
        if merge:
            forget_fingerprint(model)  # the weights are base + adapter now: not the base any more
        return model

    # --- weighted combinations --------------------------------------------------------------------------------------
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str, *args: Any,
                             **kwargs: Any) -> None:
        """PEFT's `add_weighted_adapter`, made exact for grouped 1-D conv layers ("cat") and conv layers ("svd").

        Same arguments as `peft.LoraModel.add_weighted_adapter` (combination_type defaults to "svd").
        """
        existed = adapter_name in self.peft_config
        super().add_weighted_adapter(adapters, weights, adapter_name, *args, **kwargs)
        if existed:
            return
        combination_type = kwargs.get("combination_type", args[0] if args else "svd")
        if len(adapters) == 1:
            combination_type = "linear"
        if combination_type == "cat":
            self._regroup_cat(adapters, weights, adapter_name)
        facts = facts_of_config(self.peft_config[adapter_name])
        if facts is not None:
            facts["training"] = {
                "combined_from": list(adapters), "weights": [float(w) for w in weights],
                "combination_type": combination_type,
            }

    def _regroup_cat(self, adapters: list[str], weights: list[float], adapter_name: str) -> None:
        """Redo "cat" for grouped layers group by group (PEFT's flat concatenation mixes up the groups), and divide
        the new adapter's own scaling out of ungrouped conv layers (PEFT leaves it in: wrong when it is not 1, i.e.
        with use_rslora, where it is √r)."""
        for module in self.model.modules():
            ours = isinstance(module, _LoraConv1dBase) or (self._rvc_network and isinstance(module, PeftLoraConv1d))
            if not ours or adapter_name not in module.lora_A:
                continue
            groups = module.get_base_layer().groups
            if groups == 1:
                scaling = module.scaling[adapter_name]
                if scaling != 1:
                    module.lora_B[adapter_name].weight.data /= scaling
                continue
            new_A, new_B = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
            new_rank_per_group = new_A.shape[0] // groups
            parts_A, parts_B = [], []
            for adapter, weight in zip(adapters, weights):
                if adapter not in module.lora_A:
                    continue
                weight_A = module.lora_A[adapter].weight.data * (weight * module.scaling[adapter])
                weight_B = module.lora_B[adapter].weight.data
                rank_per_group = weight_A.shape[0] // groups
                parts_A.append(weight_A.reshape(groups, rank_per_group, *weight_A.shape[1:]))
                parts_B.append(weight_B.reshape(groups, weight_B.shape[0] // groups, rank_per_group))
            cat_A = torch.cat(parts_A, dim=1)  # [g, Σr/g, in/g, k]
            cat_B = torch.cat(parts_B, dim=2)  # [g, out/g, Σr/g]
            used = cat_A.shape[1]
            padded_A = torch.zeros(groups, new_rank_per_group, *cat_A.shape[2:], dtype=cat_A.dtype, device=cat_A.device)
            padded_B = torch.zeros(groups, cat_B.shape[1], new_rank_per_group, dtype=cat_B.dtype, device=cat_B.device)
            padded_A[:, :used] = cat_A
            padded_B[:, :, :used] = cat_B / module.scaling[adapter_name]
            new_A.data = padded_A.reshape(new_A.shape).to(new_A.dtype)
            new_B.data = padded_B.reshape(new_B.shape).to(new_B.dtype)

    def _svd_generalized_task_arithmetic_weighted_adapter(
        self, combination_type: str, adapters: list[str], weights: list[float], new_rank: int, target: nn.Module,
        target_lora_A: torch.Tensor, target_lora_B: torch.Tensor, density: float | None, majority_sign_method: str,
        clamp: float | None = None, full_matrices: bool = True, driver: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SVD combination for 1-D conv layers: per group, ΔW as an `(out/g) × (in/g·k)` matrix, truncated to rank
        `new_rank/g`, written back rank-first. Other layers use PEFT's implementation.

        A reduced SVD is used (the kept singular vectors are the same as with full matrices).
        """
        # PEFT's own Conv1d layer (plain convs) flattens ΔW the same way ours does; on other models keep stock PEFT
        ours = isinstance(target, _LoraConv1dBase) or (self._rvc_network and isinstance(target, PeftLoraConv1d))
        if not ours:
            return super()._svd_generalized_task_arithmetic_weighted_adapter(
                combination_type, adapters, weights, new_rank, target, target_lora_A, target_lora_B, density,
                majority_sign_method, clamp, full_matrices=full_matrices, driver=driver,
            )
        valid = [(adapter, weight) for adapter, weight in zip(adapters, weights) if adapter in target.lora_A]
        if not valid:
            raise ValueError("No matching LoRAs found. Please raise an issue on GitHub.")
        # at least float32 (half-precision SVD is unavailable on CPU), float64 stays float64
        work_dtype = torch.promote_types(target_lora_A.dtype, torch.float32)
        deltas = [target.get_delta_weight(adapter).to(work_dtype) for adapter, _ in valid]
        valid_weights = torch.tensor([weight for _, weight in valid], device=deltas[0].device, dtype=work_dtype)
        combine = {
            "svd": lambda: task_arithmetic(deltas, valid_weights),
            "ties_svd": lambda: ties(deltas, valid_weights, density, majority_sign_method),
            "dare_linear_svd": lambda: dare_linear(deltas, valid_weights, density),
            "dare_ties_svd": lambda: dare_ties(deltas, valid_weights, density, majority_sign_method),
            "magnitude_prune_svd": lambda: magnitude_prune(deltas, valid_weights, density),
        }
        if combination_type not in combine:
            raise ValueError(f"Invalid value passed to combination type: {combination_type}")
        matrices = _delta_matrices(target, combine[combination_type]())
        groups, out_per_group, columns = matrices.shape
        rank_per_group = target_lora_A.shape[0] // groups
        factors_B = torch.zeros(groups, out_per_group, rank_per_group, device=matrices.device, dtype=work_dtype)
        factors_A = torch.zeros(groups, rank_per_group, columns, device=matrices.device, dtype=work_dtype)
        for group in range(groups):
            U, S, Vh = torch.linalg.svd(matrices[group], full_matrices=False, driver=driver)
            kept = min(rank_per_group, S.shape[0])
            factors_B[group, :, :kept] = U[:, :kept] * S[:kept]
            factors_A[group, :kept] = Vh[:kept]
        if clamp is not None:
            limit = torch.quantile(torch.cat([factors_B.flatten(), factors_A.flatten()]), clamp)
            factors_B, factors_A = factors_B.clamp(-limit, limit), factors_A.clamp(-limit, limit)
        # the new adapter's own scaling (1 unless use_rslora) is applied again in forward: divide it out
        factors_B = factors_B / target.scaling[self._new_adapter_name(target, target_lora_A)]
        new_A = factors_A.reshape(target_lora_A.shape).to(target_lora_A.dtype)
        new_B = factors_B.reshape(target_lora_B.shape).to(target_lora_B.dtype)
        return new_A, new_B

    @staticmethod
    def _new_adapter_name(target: nn.Module, target_lora_A: torch.Tensor) -> str:
        for name, module in target.lora_A.items():
            if module.weight is target_lora_A:
                return name
        raise ValueError("add_weighted_adapter: the new adapter's lora_A was not found on its layer")

