"""PEFT tuners for RVC: LoRA on Conv1d / ConvTranspose1d, in PEFT's LoRA tuner table once this package is imported.

Once imported (by `rvc_peft.models`, so by loading or building any RVC model, and by the first use of any
`rvc_peft.<name>`) the stock PEFT API works on RVC synthesizers:
`get_peft_model(base, LoraConfig(...))` or `RVCLoraConfig(target_modules="generator+flow")`, `save_pretrained`,
`PeftModel.from_pretrained`, `merge_and_unload`, `add_weighted_adapter`, `hotswap_adapter`, transformers'
`add_adapter` / `load_adapter`. Adapters are ordinary `peft_type: LORA` adapters plus `rvc_adapter.json` and an RVC
model card (uploaded with `push_adapter_to_hub`). Every other model keeps stock PEFT's behaviour (see
`registration` and `lora.model`); the private PEFT APIs relied on are listed in `peft_internals`.
"""

from .api import export_merged_voice, get_rvc_peft_model, is_rvc_adapter_model, push_adapter_to_hub
from .lora import (
    DEFAULT_PRESET,
    TARGET_PRESETS,
    LoraConv1d,
    LoraConvTranspose1d,
    RVCLoraConfig,
    RVCLoraModel,
    target_modules_for,
)
from .provenance import (
    IncompatibleAdapterError,
    base_model_fingerprint,
    read_adapter_info,
    rvc_facts,
    set_training_summary,
)
from .registration import is_registered, register, stock_peft, unregister

register()

__all__ = [
    "DEFAULT_PRESET",
    "TARGET_PRESETS",
    "IncompatibleAdapterError",
    "LoraConv1d",
    "LoraConvTranspose1d",
    "RVCLoraConfig",
    "RVCLoraModel",
    "base_model_fingerprint",
    "export_merged_voice",
    "get_rvc_peft_model",
    "is_registered",
    "is_rvc_adapter_model",
    "push_adapter_to_hub",
    "read_adapter_info",
    "register",
    "rvc_facts",
    "set_training_summary",
    "stock_peft",
    "target_modules_for",
    "unregister",
]
