"""rvc-peft: Hugging Face PEFT, Accelerate and Hub support for RVC voice models."""

from .checkpoints import CheckpointError, export_rvc, load_discriminator, load_synthesizer, save_rvc_checkpoint
from .models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer, fold_weight_norm
from .tuners import (  # importing rvc_peft.tuners installs the RVC LoRA tuner into PEFT
    IncompatibleAdapterError,
    RVCLoraConfig,
    base_model_fingerprint,
    export_merged_voice,
    get_rvc_peft_model,
    read_adapter_info,
    set_training_summary,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
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
    "read_adapter_info",
    "save_rvc_checkpoint",
    "set_training_summary",
]
