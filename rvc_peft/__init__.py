"""rvc-peft: Hugging Face PEFT, Accelerate and Hub support for RVC voice models."""

from .checkpoints import CheckpointError, export_rvc, load_discriminator, load_synthesizer, save_rvc_checkpoint
from .models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer, fold_weight_norm

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "MultiPeriodDiscriminator",
    "RVCConfig",
    "RVCSynthesizer",
    "export_rvc",
    "fold_weight_norm",
    "load_discriminator",
    "load_synthesizer",
    "save_rvc_checkpoint",
]
