"""Speaker similarity (SECS) and DNSMOS naturalness of audio, with models whose weights ship inside their wheels.

* **SECS** (speaker embedding cosine similarity), as in Seed-VC's evaluation: Resemblyzer's `VoiceEncoder("cpu")`
  (the GE2E encoder, `pretrained.pt` inside the `resemblyzer` wheel) embeds `preprocess_wav(audio_16k)` with
  `embed_utterance` (an L2-normalised 256-dim vector), and SECS is the cosine of two such embeddings. Against several
  reference clips the reference embedding is the L2-normalised mean of their utterance embeddings (Resemblyzer's
  `embed_speaker`). Range [-1, 1] (in practice [0, 1]; the encoder's outputs are non-negative): 1 = the same clip;
  measured here with espeak-ng, two sentences of one voice ≈ 0.86-0.91, a male and a female voice ≈ 0.55-0.62.
  `preprocess_wav` normalises the volume and cuts long pauses with WebRTC's VAD; where the VAD finds no speech at
  all (a sine, a buzz) the volume-normalised audio is embedded uncut, so noise-like output still gets a (low) score
  instead of the NaN an empty utterance would give.
* **DNSMOS** (Microsoft's P.835 model: SIG speech quality, BAK background, OVRL overall, 1-5, plus the P.808 MOS),
  through `speechmos.dnsmos.run(x, 16000)` (`sig_bak_ovr.onnx` + `model_v8.onnx` inside the `speechmos` wheel).
  DNSMOS scores 9.01 s windows every second and averages them; a shorter clip is tiled (the clip repeated end to
  end, doubling until it lasts 9.01 s), which is what Microsoft's `dnsmos_local.py` and speechmos do — done here
  explicitly so the behaviour does not depend on the speechmos version. Input is clipped to [-1, 1]. Calibration
  (OVRL): white noise 1.06-1.11, a DC offset plus noise 1.96, espeak-ng speech 2.1-3.1 (voice-dependent),
  clean synthetic speech ≥ 3.0; ≥ 2.5 separates speech from noise-like output.

All audio is analysed at 16 kHz (resampled with the project's soxr_hq resampler); files are read with the project's
audio reader (`rvc_peft.features.audio`). Silent or empty input raises `ValueError`. The packages are imported on
first use; when one is missing, `QualityMetricsUnavailable` (an `ImportError`) says what to install:
`pip install "rvc-peft[quality]"` and then `pip install --no-deps resemblyzer==0.1.4` (resemblyzer's own
`webrtcvad` dependency is sdist-only and needs a compiler; the extra's `webrtcvad-wheels` provides that module).
Cost on one CPU core: ~0.1 s to load the encoder once, ~0.04 s per 5 s utterance; DNSMOS ~2 s to load its two ONNX
sessions once, then ~0.5 s per 9 s window (a 12 s clip has 3 windows).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
DNSMOS_INPUT_SECONDS = 9.01  # speechmos / dnsmos_local.py: INPUT_LENGTH
EMBEDDING_SIZE = 256
SILENCE_PEAK = 1e-4  # -80 dBFS: below this everywhere, a signal counts as silent
METRICS = ("secs", "dnsmos")
INSTALL_COMMAND = 'pip install "rvc-peft[quality]" && pip install --no-deps resemblyzer==0.1.4'

# What each metric imports, and the distribution that provides each module.
_MODULES = {"secs": ("webrtcvad", "resemblyzer"), "dnsmos": ("onnxruntime", "requests", "speechmos")}
_DISTRIBUTIONS = {"webrtcvad": "webrtcvad-wheels"}
_NAMES = {"secs": "speaker similarity (SECS)", "dnsmos": "DNSMOS"}

ReferenceInput = str | os.PathLike | np.ndarray | tuple | Sequence


class QualityMetricsUnavailable(ImportError):
    """A package that SECS or DNSMOS needs cannot be imported; the message names it and the install command."""

    def __init__(self, packages: Sequence[str], metrics: Sequence[str], reason: str = "") -> None:
        self.packages = list(dict.fromkeys(packages))
        self.metrics = list(dict.fromkeys(metrics))
        what = " and ".join(_NAMES.get(m, m) for m in self.metrics)
        missing = ", ".join(self.packages)
        detail = f" ({reason})" if reason else ""
        message = (f"{what} need{'s' if len(self.metrics) == 1 else ''} {missing}, which cannot be imported{detail}; "
                   f"install the quality extra: {INSTALL_COMMAND} (resemblyzer goes in with --no-deps because its "
                   f"webrtcvad dependency is sdist-only; webrtcvad-wheels from the extra provides it)")
        super().__init__(message, name=self.packages[0] if self.packages else None)


def _import_for(metric: str) -> None:
    """Import what `metric` needs (cheap once imported), or raise `QualityMetricsUnavailable` naming the package."""
    import importlib

    for module in _MODULES[metric]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing = (error.name or module).split(".")[0]
            package = _DISTRIBUTIONS.get(missing, missing)
            raise QualityMetricsUnavailable([package], [metric], f"{type(error).__name__}: {error}") from error


def require(*metrics: str) -> None:
    """Raise one `QualityMetricsUnavailable` naming every missing package of `metrics` ("secs", "dnsmos"; default
    both), or return None when all of them can run."""
    packages: list[str] = []
    failed: list[str] = []
    reasons: list[str] = []
    for metric in metrics or METRICS:
        if metric not in _MODULES:
            raise ValueError(f"unknown quality metric {metric!r}; choose from {', '.join(METRICS)}")
        try:
            _import_for(metric)
        except QualityMetricsUnavailable as error:
            packages += error.packages
            failed.append(metric)
            reasons.append(str(error.__cause__))
    if failed:
        raise QualityMetricsUnavailable(packages, failed, "; ".join(reasons))


def available_metrics(metrics: Collection[str] = METRICS) -> list[str]:
    """The subset of `metrics` whose packages import."""
    found = []
    for metric in metrics:
        try:
            require(metric)
        except QualityMetricsUnavailable:
            continue
        found.append(metric)
    return found


# --- audio in ------------------------------------------------------------------------------------------------------

def _as_16k(audio: Any, sample_rate: int, name: str = "audio") -> np.ndarray:
    """Mono float32 audio at 16 kHz; ValueError for empty, non-finite or silent input."""
    from ..features.audio import resample

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:  # [L, C] (soundfile) or [C, L]
        x = x.mean(axis=1 if x.shape[1] < x.shape[0] else 0)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name}: expected non-empty mono audio, got shape {list(np.shape(audio))}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite samples")
    if sample_rate is None or int(sample_rate) <= 0:
        raise ValueError(f"{name}: needs a positive sample rate, got {sample_rate!r}")
    if float(np.abs(x).max()) < SILENCE_PEAK:
        raise ValueError(f"{name}: is silent (peak below {SILENCE_PEAK:g}, -80 dBFS); SECS and DNSMOS need sound")
    x = resample(x, int(sample_rate), SAMPLE_RATE)
    if x.size == 0:
        raise ValueError(f"{name}: too short to resample to {SAMPLE_RATE} Hz")
    return x


def _read(path: str | os.PathLike) -> np.ndarray:
    from ..features.audio import load_audio

    return _as_16k(load_audio(path, SAMPLE_RATE), SAMPLE_RATE, str(path))


def _audio_files(path: Path) -> list[Path]:
    from ..features.audio import AUDIO_EXTENSIONS

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path]
    files = [p for p in sorted(path.rglob("*"))
             if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")]
    if not files:
        raise ValueError(f"{path}: no audio files in this folder")
    return files


# --- SECS ----------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resemblyzer utterance embedding of `audio` (resampled to 16 kHz, `preprocess_wav`): float32 [256], L2 norm 1.

    The encoder is loaded once per process. Raises `QualityMetricsUnavailable` without resemblyzer/webrtcvad and
    `ValueError` for empty, non-finite or silent audio.
    """
    _import_for("secs")
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import normalize_volume
    from resemblyzer.hparams import audio_norm_target_dBFS

    x = _as_16k(audio, sample_rate, "speaker_embedding")
    wav = preprocess_wav(x)  # already at 16 kHz: no source_sr, so resemblyzer does not resample
    if wav.size == 0:  # the VAD found no speech at all: embed the whole (volume-normalised) clip instead
        wav = normalize_volume(x, audio_norm_target_dBFS, increase_only=True)
    embedding = np.asarray(_voice_encoder().embed_utterance(wav), dtype=np.float32)
    if not np.isfinite(embedding).all():
        raise ValueError("speaker_embedding: the encoder gave no usable embedding (no sound it could analyze)")
    return embedding


def _reference_clips(reference: Any) -> list[Path | tuple[np.ndarray, int]]:
    """Files (each once, folders expanded) and (audio, sample_rate) clips named by `reference`."""
    if isinstance(reference, (str, os.PathLike)):
        return _audio_files(Path(reference))
    if (isinstance(reference, tuple) and len(reference) == 2 and not isinstance(reference[0], (str, os.PathLike))
            and isinstance(reference[1], (int, float, np.integer, np.floating))):
        return [(np.asarray(reference[0]), int(reference[1]))]
    if isinstance(reference, np.ndarray):
        raise TypeError("a reference array must be an embedding of shape (256,); pass audio as (audio, sample_rate)")
    if isinstance(reference, Sequence) and not isinstance(reference, (str, bytes)):
        clips: list[Path | tuple[np.ndarray, int]] = []
        seen: set[Path] = set()
        for item in reference:
            for clip in _reference_clips(item):
                if isinstance(clip, Path):
                    if clip.resolve() in seen:  # a file named twice (or also inside a folder given) counts once
                        continue
                    seen.add(clip.resolve())
                clips.append(clip)
        if not clips:
            raise ValueError("no reference clips given")
        return clips
    raise TypeError(f"unsupported reference {type(reference).__name__}: give file or folder paths, (audio, "
                    "sample_rate) clips, a list of these, or an embedding")


def reference_embedding(reference: ReferenceInput) -> np.ndarray:
    """The speaker embedding of `reference`: L2-normalised mean of its clips' utterance embeddings.

    `reference` is a file or folder path (every audio file under a folder), an `(audio, sample_rate)` clip, a list of
    those (a file named twice, or also found in a folder given, counts once), or a precomputed embedding (a float
    array of shape (256,), returned normalised).
    """
    if isinstance(reference, np.ndarray) and reference.ndim == 1 and reference.size == EMBEDDING_SIZE:
        embedding = reference.astype(np.float32)
    else:
        embeddings = [speaker_embedding(_read(clip), SAMPLE_RATE) if isinstance(clip, Path) else speaker_embedding(*clip)
                      for clip in _reference_clips(reference)]
        embedding = np.mean(embeddings, axis=0).astype(np.float32)
    norm = float(np.linalg.norm(embedding))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the reference embedding is zero or not finite")
    return embedding / norm


def speaker_similarity(audio: np.ndarray, sample_rate: int, reference: ReferenceInput) -> float:
    """SECS: cosine similarity of `audio`'s speaker embedding to `reference`'s (see `reference_embedding`).

    1.0 for a clip against itself; ≈ 0.86-0.91 for two sentences of one espeak-ng voice, ≈ 0.55-0.62 for a male
    against a female espeak-ng voice.
    """
    utterance = speaker_embedding(audio, sample_rate)
    target = reference_embedding(reference)
    return float(np.dot(utterance, target) / float(np.linalg.norm(utterance)))


# --- DNSMOS --------------------------------------------------------------------------------------------------------

def tile_for_dnsmos(audio16k: np.ndarray) -> np.ndarray:
    """DNSMOS's own padding of short clips: the clip appended to itself until it lasts at least 9.01 s."""
    needed = int(DNSMOS_INPUT_SECONDS * SAMPLE_RATE)
    x = np.asarray(audio16k, dtype=np.float32)
    if x.size == 0:
        raise ValueError("dnsmos: empty audio")
    while x.size < needed:
        x = np.concatenate([x, x])
    return x


def dnsmos(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """DNSMOS P.835 of `audio`: {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"} (MOS, 1-5).

    The audio is resampled to 16 kHz, clipped to [-1, 1] and tiled to 9.01 s when shorter (see the module
    docstring). Raises `QualityMetricsUnavailable` without speechmos/onnxruntime and `ValueError` for empty,
    non-finite or silent audio.
    """
    _import_for("dnsmos")
    from speechmos import dnsmos as speechmos_dnsmos

    x = tile_for_dnsmos(np.clip(_as_16k(audio, sample_rate, "dnsmos"), -1.0, 1.0))
    scores = speechmos_dnsmos.run(x, SAMPLE_RATE)
    return {"dnsmos_sig": float(scores["sig_mos"]), "dnsmos_bak": float(scores["bak_mos"]),
            "dnsmos_ovrl": float(scores["ovrl_mos"]), "dnsmos_p808": float(scores["p808_mos"])}


__all__ = [
    "QualityMetricsUnavailable",
    "available_metrics",
    "dnsmos",
    "reference_embedding",
    "require",
    "speaker_embedding",
    "speaker_similarity",
    "tile_for_dnsmos",
]
