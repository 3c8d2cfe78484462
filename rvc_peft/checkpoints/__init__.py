"""Checkpoint I/O: safe loading of every RVC file format, export back to RVC, our Hub layout."""

from ..utils.files import atomic_write
from .export import export_rvc, rvc_state_dict, save_rvc_checkpoint
from .formats import RVCCheckpoint, infer_config, parse_checkpoint
from .loader import load_discriminator, load_synthesizer, read_checkpoint, resolve_model_file
from .safe_load import CheckpointError, read_pth

__all__ = [
    "CheckpointError",
    "RVCCheckpoint",
    "atomic_write",
    "export_rvc",
    "infer_config",
    "load_discriminator",
    "load_synthesizer",
    "parse_checkpoint",
    "read_checkpoint",
    "read_pth",
    "resolve_model_file",
    "rvc_state_dict",
    "save_rvc_checkpoint",
]
