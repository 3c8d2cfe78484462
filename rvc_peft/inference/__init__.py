"""rvc_peft.inference: RVC's conversion pipeline on one base with many LoRA voices, and objective evaluation.

* `VoiceConverter` — `convert(audio_or_path, f0_up_key, index, index_rate, protect, rms_mix_rate, ...)` following
  RVC WebUI's pipeline (padding, quiet-point segmentation, retrieval, protect, RMS mix), `convert_batch` for
  several inputs with per-row voices;
* `VoiceBank` — adapters loaded once onto one base: switch by name, mixed-voice batches, blends, merged fast path;
* `evaluate` — MCD, F0 RMSE/correlation, V/UV error and spectral convergence, with a PNG figure.
"""

from .audio_io import AudioTooShortError, ConversionError, prepare_audio, rms_mix, write_audio
from .evaluation import EvaluationError, evaluate
from .pipeline import ConversionTimings, VoiceConverter
from .segmentation import WindowConfig
from .voices import Voice, VoiceBank, VoiceError

__all__ = [
    "AudioTooShortError",
    "ConversionError",
    "ConversionTimings",
    "EvaluationError",
    "Voice",
    "VoiceBank",
    "VoiceConverter",
    "VoiceError",
    "WindowConfig",
    "evaluate",
    "prepare_audio",
    "rms_mix",
    "write_audio",
]
