"""`RVCLoraConfig`: a field-free `LoraConfig` with RVC target presets and voice-adapter defaults.

It adds no dataclass fields, so `adapter_config.json` stays a standard `peft_type: LORA` file that plain PEFT reads.
Target presets are accepted wherever `target_modules` is a string — here, and (after `import rvc_peft`) in a plain
`LoraConfig` used on an RVC model:

* `"generator"` — the decoder: `dec.conv_pre`, `dec.cond`, `dec.ups.*` (ConvTranspose1d), every resblock conv
  (dilated Conv1d), `dec.noise_convs.*` (pitch models) and `dec.conv_post`;
* `"flow"` — the normalising flow's coupling layers (`pre`, `post`, WaveNet `in_layers`, `res_skip_layers`,
  `cond_layer`);
* `"encoder"` — the content/text encoder `enc_p`: `emb_phone` (Linear), `emb_pitch` (Embedding), attention
  `conv_q/k/v/o`, FFN `conv_1/2` and `proj`;
* `"all"` = generator + flow + encoder. Presets combine with "+", e.g. `"generator+flow"`.

The posterior encoder `enc_q` (training only, dropped from exported voices) and the speaker table `emb_g` are never
targeted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from peft.tuners.lora.config import LoraConfig
from torch import nn

DEFAULT_PRESET = "generator"
DEFAULT_RANK = 8
DEFAULT_ALPHA = 16

_PRESET_PATTERNS = {
    "generator": r"dec\.(?:conv_pre|cond|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]\.\d+|noise_convs\.\d+)",
    "flow": r"flow\.flows\.\d+\.(?:pre|post|enc\.cond_layer|enc\.in_layers\.\d+|enc\.res_skip_layers\.\d+)",
    "encoder": (
        r"enc_p\.(?:emb_phone|emb_pitch|proj|encoder\.attn_layers\.\d+\.conv_[qkvo]|encoder\.ffn_layers\.\d+\.conv_[12])"
    ),
}
_PRESET_ALIASES = {"all": ("generator", "flow", "encoder"), "decoder": ("generator",), "enc_p": ("encoder",)}
TARGET_PRESETS: tuple[str, ...] = ("generator", "flow", "encoder", "all", "generator+flow")


def _preset_parts(expression: str) -> list[str] | None:
    parts: list[str] = []
    for token in expression.replace(" ", "").lower().split("+"):
        if token in _PRESET_PATTERNS:
            parts.append(token)
        elif token in _PRESET_ALIASES:
            parts.extend(_PRESET_ALIASES[token])
        else:
            return None
    return parts or None


def is_target_preset(value: Any) -> bool:
    """True for a preset expression such as "generator", "all" or "generator+flow"."""
    return isinstance(value, str) and _preset_parts(value) is not None


def target_modules_for(preset: str) -> str:
    """The `target_modules` regex of a preset expression (module names may carry any prefix, e.g. a wrapper's).

    Raises `ValueError` listing the presets for an unknown name.
    """
    parts = _preset_parts(preset) if isinstance(preset, str) else None
    if parts is None:
        raise ValueError(f"unknown RVC target preset {preset!r}; choose from {', '.join(TARGET_PRESETS)} (or join with '+')")
    ordered = [name for name in _PRESET_PATTERNS if name in parts]
    return r"(?:.*\.)?(?:" + "|".join(_PRESET_PATTERNS[name] for name in ordered) + r")"


def preset_of(target_modules: Any) -> str | None:
    """The preset expression a `target_modules` regex was built from, or None (for model cards)."""
    if not isinstance(target_modules, str):
        return None
    for names in ("generator", "flow", "encoder", "generator+flow", "generator+encoder", "flow+encoder", "all"):
        if target_modules == target_modules_for(names):
            return names
    return None


def matches_preset(module_name: str, preset: str) -> bool:
    """True if `module_name` is targeted by `preset` (used by tests and tools)."""
    return re.fullmatch(target_modules_for(preset), module_name) is not None


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
        from .layer import LoraConvTranspose1d, conv1d_layer_factory

        self._register_custom_module({nn.ConvTranspose1d: LoraConvTranspose1d, nn.Conv1d: conv1d_layer_factory})

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Write `adapter_config.json` (RVC facts in `auto_mapping["rvc"]`), `rvc_adapter.json` and `README.md`."""
        from ..model_card import write_model_card
        from ..provenance import FACTS_KEY, facts_of_config, write_adapter_info

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
