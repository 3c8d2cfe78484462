"""Every private PEFT API rvc_peft relies on, with the reason, and one check that they are still there.

PEFT has no public extension point for a new layer type that its saved adapters (`peft_type: LORA`) load into, so
`rvc_peft.tuners` overrides a few `LoraModel` hooks and follows the `LoraLayer` conventions. Each entry of
`PRIVATE_APIS` names one internal, where we use it, and why. `check_peft_internals()` returns one line per internal a
PEFT release changed (empty when all is well); the test suite fails with those lines, so an upgrade that breaks us
says which internal moved instead of failing somewhere inside a training run.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PrivateAPI:
    """One PEFT internal: its name, where rvc_peft uses it, why, and a check that it still behaves as relied on."""

    name: str
    used_in: str
    reason: str
    check: Callable[[], bool]


def _parameters(function: Callable) -> list[str]:
    return list(inspect.signature(function).parameters)


def _source(obj: object) -> str:
    return inspect.getsource(obj)


def _tuner_mapping_is_looked_up_at_call_time() -> bool:
    import peft.mapping
    import peft.peft_model
    import peft.utils.save_and_load

    return (
        isinstance(peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING, dict)
        and isinstance(peft.mapping.PEFT_TYPE_TO_MIXED_MODEL_MAPPING, dict)
        and "PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type]" in _source(peft.peft_model.PeftModel.__init__)
        and "PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]" in _source(peft.utils.save_and_load)
    )


def _create_new_module_is_called_through_self() -> bool:
    from peft.tuners.lora import LoraModel

    return (
        isinstance(inspect.getattr_static(LoraModel, "_create_new_module"), staticmethod)
        and _parameters(LoraModel._create_new_module) == ["lora_config", "adapter_name", "target", "kwargs"]
        and "self._create_new_module(lora_config, adapter_name, target," in _source(LoraModel._create_and_replace)
    )


def _prepare_adapter_config() -> bool:
    from peft.tuners.lora import LoraModel

    return _parameters(LoraModel._prepare_adapter_config) == ["self", "peft_config", "model_config"]


def _inject_adapter() -> bool:
    import peft.peft_model
    from peft.tuners.tuners_utils import BaseTuner

    return _parameters(BaseTuner.inject_adapter) == [
        "self", "model", "adapter_name", "autocast_adapter_dtype", "low_cpu_mem_usage", "state_dict",
    ] and "self.base_model.inject_adapter(" in _source(peft.peft_model.PeftModel.add_adapter)


def _remap_adapter_state_dict_for_load() -> bool:
    from peft.tuners.tuners_utils import BaseTuner

    return _parameters(BaseTuner._remap_adapter_state_dict_for_load) == ["model", "config", "adapter_name", "state_dict"]


def _unload_and_optionally_merge() -> bool:
    from peft.tuners.tuners_utils import BaseTuner

    return _parameters(BaseTuner._unload_and_optionally_merge) == [
        "self", "merge", "progressbar", "safe_merge", "adapter_names",
    ]


def _svd_hook() -> bool:
    from peft.tuners.lora import LoraModel

    source = _source(LoraModel.add_weighted_adapter)
    return _parameters(LoraModel._svd_generalized_task_arithmetic_weighted_adapter) == [
        "self", "combination_type", "adapters", "weights", "new_rank", "target", "target_lora_A", "target_lora_B",
        "density", "majority_sign_method", "clamp", "full_matrices", "driver",
    ] and "self._svd_generalized_task_arithmetic_weighted_adapter(" in source


def _flat_cat() -> bool:
    from peft.tuners.lora import LoraModel

    source = _source(LoraModel.add_weighted_adapter)
    return (
        _parameters(LoraModel.add_weighted_adapter)[:5] == ["self", "adapters", "weights", "adapter_name", "combination_type"]
        and "replace(" in source
        and "target_lora_A.data[: loras_A.shape[0], :] = loras_A" in source
    )


def _lora_layer_conventions() -> bool:
    from peft.tuners.lora import layer as lora_layer

    layer = lora_layer.LoraLayer
    return (
        {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"} <= set(layer.adapter_layer_names)
        and {"r", "lora_alpha", "scaling", "lora_dropout", "lora_bias"} <= set(layer.other_param_names)
        and _parameters(layer.reset_lora_parameters) == ["self", "adapter_name", "init_lora_weights"]
        and _parameters(layer._mixed_batch_forward) == ["self", "x", "args", "adapter_names", "kwargs"]
        and _parameters(layer._check_forward_args) == ["self", "x", "args", "kwargs"]
        and _parameters(layer.resolve_lora_variant) == ["self", "config", "kwargs"]
        and hasattr(lora_layer, "VARIANT_KWARG_KEYS")
        and "_get_in_out_features(base_layer)" in _source(layer.__init__)
    )


def _no_stock_transposed_conv() -> bool:
    from peft.tuners.lora import layer as lora_layer

    return "ConvTranspose1d" not in _source(lora_layer.dispatch_default)


def _auto_mapping_is_saved() -> bool:
    import peft.peft_model
    from peft import LoraConfig

    return "auto_mapping" in {f.name for f in dataclasses.fields(LoraConfig)} and (
        "peft_config.save_pretrained(output_dir, auto_mapping_dict=auto_mapping_dict)"
        in _source(peft.peft_model.PeftModel.save_pretrained)
    )


def _custom_modules() -> bool:
    from peft import LoraConfig

    config = LoraConfig()
    return hasattr(config, "_custom_modules") and callable(getattr(config, "_register_custom_module", None))


def _config_class_swap() -> bool:
    from peft import LoraConfig

    from .lora.config import RVCLoraConfig

    return {f.name for f in dataclasses.fields(RVCLoraConfig)} == {f.name for f in dataclasses.fields(LoraConfig)}


def _hotswap() -> bool:
    from peft.utils import hotswap

    return _parameters(hotswap.hotswap_adapter_from_state_dict) == [
        "model", "state_dict", "adapter_name", "config", "parameter_prefix",
    ]


PRIVATE_APIS: tuple[PrivateAPI, ...] = (
    PrivateAPI(
        "peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING / PEFT_TYPE_TO_MIXED_MODEL_MAPPING", "tuners/registration.py",
        "the only place PEFT picks the tuner class for `peft_type: LORA`, read at call time by get_peft_model, "
        "PeftModel.from_pretrained / load_adapter and the state-dict helpers: plain PeftModel.from_pretrained(base, "
        "adapter_id) on an RVC base needs our tuner without extra arguments",
        _tuner_mapping_is_looked_up_at_call_time,
    ),
    PrivateAPI(
        "LoraModel._create_new_module (a staticmethod called as self._create_new_module)", "tuners/lora/model.py",
        "where the layer for each target is chosen; ours is an instance method so it knows whether the model is an "
        "RVC network (PEFT passes no model)",
        _create_new_module_is_called_through_self,
    ),
    PrivateAPI(
        "LoraModel._prepare_adapter_config", "tuners/lora/model.py",
        "turns RVC preset names in target_modules (and the default target) into regexes for plain LoraConfigs",
        _prepare_adapter_config,
    ),
    PrivateAPI(
        "BaseTuner.inject_adapter (and PeftModel.add_adapter calling it)", "tuners/lora/model.py",
        "records the RVC facts of a new adapter and checks a loaded adapter was made for this base",
        _inject_adapter,
    ),
    PrivateAPI(
        "BaseTuner._remap_adapter_state_dict_for_load", "tuners/lora/model.py",
        "the one place every load path passes with the file's tensors: missing/stray keys, wrong shapes and NaN "
        "weights are refused there (PEFT only warns, and the voice would silently be the plain base)",
        _remap_adapter_state_dict_for_load,
    ),
    PrivateAPI(
        "BaseTuner._unload_and_optionally_merge", "tuners/lora/model.py",
        "a merged model is no longer the base: its cached fingerprint is dropped",
        _unload_and_optionally_merge,
    ),
    PrivateAPI(
        "LoraModel._svd_generalized_task_arithmetic_weighted_adapter", "tuners/lora/model.py",
        "SVD blends of conv layers: PEFT's version flattens ΔW wrongly for 1-D convs and ignores groups",
        _svd_hook,
    ),
    PrivateAPI(
        "LoraModel.add_weighted_adapter internals (dataclasses.replace of the config, flat 'cat' concatenation)",
        "tuners/lora/model.py", "'cat' blends of grouped layers are redone group by group after PEFT's flat copy",
        _flat_cat,
    ),
    PrivateAPI(
        "LoraLayer conventions (adapter_layer_names, other_param_names, reset_lora_parameters, _mixed_batch_forward, "
        "_check_forward_args, resolve_lora_variant, VARIANT_KWARG_KEYS, _get_in_out_features)", "tuners/lora/layer.py",
        "our Conv1d / ConvTranspose1d layers are LoraLayers, so merging, mixed batches, hot-swapping and saving work "
        "through PEFT's generic code",
        _lora_layer_conventions,
    ),
    PrivateAPI(
        "lora.layer.dispatch_default has no ConvTranspose1d", "tuners/lora/model.py",
        "why the tuner entry exists at all: when PEFT handles ConvTranspose1d the dispatcher can shrink",
        _no_stock_transposed_conv,
    ),
    PrivateAPI(
        "LoraConfig.auto_mapping, saved through PeftModel.save_pretrained(auto_mapping_dict=...)",
        "tuners/provenance.py, tuners/lora/config.py",
        "carries the RVC facts (base, fingerprint, sample rate) inside adapter_config.json, which plain PEFT reads",
        _auto_mapping_is_saved,
    ),
    PrivateAPI(
        "LoraConfig._register_custom_module / _custom_modules", "tuners/lora/config.py",
        "RVCLoraConfig's opt-in to our conv layers where the tuner entry is bypassed (mixed models, stock_peft()) "
        "and on non-RVC models",
        _custom_modules,
    ),
    PrivateAPI(
        "swapping a loaded config's __class__ from LoraConfig to RVCLoraConfig", "tuners/lora/model.py",
        "adds the RVC save behaviour (rvc_adapter.json, model card) to adapters loaded as plain LoRA; valid only "
        "while RVCLoraConfig adds no dataclass fields",
        _config_class_swap,
    ),
    PrivateAPI(
        "peft.utils.hotswap.hotswap_adapter_from_state_dict", "inference/voices.py",
        "switching voices in place without re-creating layers",
        _hotswap,
    ),
)


def check_peft_internals() -> list[str]:
    """One line per private PEFT API that the installed PEFT no longer provides as rvc_peft relies on it."""
    import peft

    problems = []
    for api in PRIVATE_APIS:
        try:
            ok = api.check()
        except Exception as exc:  # noqa: BLE001 - a moved attribute or module is reported like any other change
            ok, detail = False, f" ({type(exc).__name__}: {exc})"
        else:
            detail = ""
        if not ok:
            problems.append(f"peft {peft.__version__} changed {api.name}{detail}; used in rvc_peft/{api.used_in} "
                            f"because {api.reason}")
    return problems
