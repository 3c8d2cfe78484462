"""rvc-peft: Hugging Face PEFT, Accelerate and Hub support for RVC voice models.

`import rvc_peft` is cheap (no torch, transformers or PEFT): the public names below load their submodule on first
use, so `rvc-peft --help` and scripts that only need one corner start fast. The first use of any of them (e.g.
`rvc_peft.load_synthesizer`) also imports `rvc_peft.tuners`, which installs the RVC LoRA tuner into PEFT, so that
plain `PeftModel.from_pretrained(base, adapter)` / `get_peft_model` work on RVC models from then on
(`import rvc_peft.tuners` does it explicitly; `load_synthesizer` does it too, however it is imported).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first access, see __getattr__)
_LAZY = {
    "CheckpointError": "checkpoints",
    "export_rvc": "checkpoints",
    "load_discriminator": "checkpoints",
    "load_synthesizer": "checkpoints",
    "save_rvc_checkpoint": "checkpoints",
    "MultiPeriodDiscriminator": "models",
    "RVCConfig": "models",
    "RVCSynthesizer": "models",
    "fold_weight_norm": "models",
    "ConversionSettings": "inference",
    "IncompatibleAdapterError": "tuners",
    "RVCLoraConfig": "tuners",
    "base_model_fingerprint": "tuners",
    "export_merged_voice": "tuners",
    "get_rvc_peft_model": "tuners",
    "push_adapter_to_hub": "tuners",
    "read_adapter_info": "tuners",
    "set_training_summary": "tuners",
}

__all__ = [
    "CheckpointError",
    "ConversionSettings",
    "IncompatibleAdapterError",
    "MultiPeriodDiscriminator",
    "RVCConfig",
    "RVCLoraConfig",
    "RVCSynthesizer",
    "base_model_fingerprint",
    "export_merged_voice",
    "export_rvc",
    "fold_weight_norm",
    "get_rvc_peft_model",
    "load_discriminator",
    "load_synthesizer",
    "push_adapter_to_hub",
    "read_adapter_info",
    "save_rvc_checkpoint",
    "set_training_summary",
]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .checkpoints import CheckpointError, export_rvc, load_discriminator, load_synthesizer, save_rvc_checkpoint
    from .inference import ConversionSettings
    from .models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer, fold_weight_norm
    from .tuners import (
        IncompatibleAdapterError,
        RVCLoraConfig,
        base_model_fingerprint,
        export_merged_voice,
        get_rvc_peft_model,
        push_adapter_to_hub,
        read_adapter_info,
        set_training_summary,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        # Every public name brings the tuner along: before the lazy import, `import rvc_peft` installed it, and code
        # such as `PeftModel.from_pretrained(rvc_peft.load_synthesizer(...), adapter)` relies on that.
        importlib.import_module(".tuners", __name__)
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    # `rvc_peft.checkpoints.resolve_model_file` after a plain `import rvc_peft` worked when the package imported its
    # subpackages eagerly; keep it working for every subpackage / module.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    loaded = {name for name, value in globals().items()
              if getattr(value, "__name__", "").startswith(f"{__name__}.")}  # subpackages imported so far
    return sorted(set(__all__) | loaded | {name for name in globals() if name.startswith("__")})
