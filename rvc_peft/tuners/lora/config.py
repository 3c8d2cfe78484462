"""`RVCLoraConfig`: a field-free `LoraConfig` with RVC target presets and voice-adapter defaults.

It adds no dataclass fields, so `adapter_config.json` stays a standard `peft_type: LORA` file that plain PEFT reads.
Target presets (see `presets`) are accepted wherever `target_modules` is a string — here, and (after `import rvc_peft`)
in a plain `LoraConfig` used on an RVC model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft.tuners.lora.config import LoraConfig
from torch import nn

from ..model_card import write_model_card
from ..provenance import FACTS_KEY, facts_of_config, write_adapter_info
from .layer import LoraConvTranspose1d, conv1d_layer_factory
from .presets import DEFAULT_PRESET, is_target_preset, target_modules_for

DEFAULT_RANK = 8
DEFAULT_ALPHA = 16


@dataclass
class RVCLoraConfig(LoraConfig):
    """`LoraConfig` for RVC voices: `target_modules` may name a preset (default "generator"), r=8, lora_alpha=16.

    Example: `RVCLoraConfig(target_modules="generator+flow", r=16, lora_alpha=32)`. Any `LoraConfig` argument works
    (`rank_pattern`, `exclude_modules`, `lora_dropout`, ...). DoRA is refused on conv layers.

    On an RVC model the adapter also records where it came from (see `rvc_peft.tuners.provenance`): saving writes
    `rvc_adapter.json` and an RVC model card next to `adapter_config.json`.
    """

    r: int = field(default=DEFAULT_RANK, metadata={"help": "LoRA rank (8 suits a voice adapter of a few MB)"})
    lora_alpha: int = field(default=DEFAULT_ALPHA, metadata={"help": "LoRA alpha (scaling = alpha / r)"})

    def __post_init__(self) -> None:
        if self.target_modules is None and not self.target_parameters:
            self.target_modules = DEFAULT_PRESET
        if is_target_preset(self.target_modules):
            self.target_modules = target_modules_for(self.target_modules)
        super().__post_init__()
        # Fallback for code paths that do not go through the registered tuner (PEFT's mixed models call
        # LoraModel._create_new_module directly; `stock_peft()`): PEFT's experimental custom-module hook, re-set here
        # because LoraConfig.__post_init__ clears it and it is never saved. RVCLoraModel ignores it (it knows the
        # model; the hook does not, so there grouped Conv1d layers keep PEFT's layer, see needs_rvc_conv1d).
        self._register_custom_module({nn.ConvTranspose1d: LoraConvTranspose1d, nn.Conv1d: conv1d_layer_factory})

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Write `adapter_config.json` (RVC facts in `auto_mapping["rvc"]`), `rvc_adapter.json` and `README.md`."""
        facts = facts_of_config(self)
        if facts is None:
            super().save_pretrained(save_directory, **kwargs)
            return
        auto_mapping = dict(self.auto_mapping)
        auto_mapping.update(kwargs.pop("auto_mapping_dict", None) or {})
        auto_mapping[FACTS_KEY] = facts
        # The base's name is kept in the facts (see RVCLoraModel.inject_adapter); PeftModel.save_pretrained may have
        # filled the field from the model's raw name_or_path (a private local path): write the facts' name instead,
        # unless the user set another name explicitly.
        current = self.base_model_name_or_path
        automatic = current is None or current == self.__dict__.get("_rvc_model_name")
        base = facts.setdefault("base_model", {})
        if not automatic:
            base["name_or_path"] = current
        self.base_model_name_or_path = base.get("name_or_path")
        try:
            super().save_pretrained(save_directory, auto_mapping_dict=auto_mapping, **kwargs)
        finally:
            self.base_model_name_or_path = None if automatic else current
        write_adapter_info(save_directory, facts)
        write_model_card(save_directory, self, facts)
