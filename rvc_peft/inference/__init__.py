"""rvc_peft.inference: RVC's conversion pipeline on one base with many LoRA voices, and objective evaluation.

* `VoiceConverter` — `convert(audio_or_path, voice=..., f0_up_key=..., index_rate=..., protect=..., ...)` following
  RVC WebUI's pipeline (padding, quiet-point segmentation, retrieval, protect, RMS mix), `convert_batch` for
  several inputs with per-row voices;
* `ConversionSettings` — those per-call settings as one validated, frozen dataclass (`convert(audio,
  settings=...)`; `rvc-peft convert` builds one from its flags);
* `VoiceBank` — adapters loaded once onto one base: switch by name, mixed-voice batches, blends, merged fast path;
* `StreamingConverter` — block-by-block conversion with bounded latency (RVC's realtime algorithm, SOLA crossfades),
  `stream_file` for files;
* `optimize_for_inference` — the synthesizer's fast path (folded, channels-last; fp32 equal to the reference to
  1e-4, bf16/fp16), also `VoiceConverter(..., backend="torch-fast" | "onnx", precision=...)` (`backends.py`);
* `evaluate` — MCD, F0 RMSE/correlation, V/UV error and spectral convergence, with a PNG figure.
"""

from .audio_io import AudioTooShortError, ConversionError, prepare_audio, rms_mix, write_audio
from .backends import BackendError
from .evaluation import EvaluationError, evaluate
from .fast_path import optimize_for_inference
from .pipeline import ConversionTimings, VoiceConverter
from .segmentation import WindowConfig
from .settings import ConversionSettings
from .stream_io import stream_file
from .streaming import StreamingConverter
from .voices import Voice, VoiceBank, VoiceError

__all__ = [
    "AudioTooShortError",
    "BackendError",
    "ConversionError",
    "ConversionSettings",
    "ConversionTimings",
    "EvaluationError",
    "StreamingConverter",
    "Voice",
    "VoiceBank",
    "VoiceConverter",
    "VoiceError",
    "WindowConfig",
    "evaluate",
    "optimize_for_inference",
    "prepare_audio",
    "rms_mix",
    "stream_file",
    "write_audio",
]
