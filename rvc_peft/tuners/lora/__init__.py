"""LoRA for RVC's 1-D conv layers, laid out like `peft.tuners.lora` (config, layer, model)."""

from .config import RVCLoraConfig
from .layer import LoraConv1d, LoraConvTranspose1d, RankFirstConvTranspose1d, assign_weight, dispatch_rvc
from .model import RVCLoraModel
from .presets import DEFAULT_PRESET, TARGET_PRESETS, is_target_preset, matches_preset, target_modules_for

__all__ = [
    "DEFAULT_PRESET",
    "TARGET_PRESETS",
    "LoraConv1d",
    "LoraConvTranspose1d",
    "RVCLoraConfig",
    "RVCLoraModel",
    "RankFirstConvTranspose1d",
    "assign_weight",
    "dispatch_rvc",
    "is_target_preset",
    "matches_preset",
    "target_modules_for",
]
