"""The voice lab: offline corpora, voices and metrics for experiments with RVC voice conversion.

Names are imported lazily (PEP 562): `import rvc_peft.lab` loads nothing of the submodules until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LabBaseFiles": "assets",
    "lab_base_files": "assets",
    "PretrainSettings": "pretrain",
    "lab_config": "pretrain",
    "pack_corpus": "pretrain",
    "CORPUS_VERSION": "corpus",
    "HELDOUT_SENTENCE_IDS": "corpus",
    "SAMPLE_RATE": "corpus",
    "SENTENCES": "corpus",
    "SENTENCE_IDS": "corpus",
    "TARGET_SPEAKERS": "corpus",
    "TRAIN_SENTENCE_IDS": "corpus",
    "VOICES": "corpus",
    "CorpusError": "corpus",
    "Voice": "corpus",
    "base_speakers": "corpus",
    "build_corpus": "corpus",
    "format_summary": "corpus",
    "list_voices": "corpus",
    "load_manifest": "corpus",
    "sentence_split": "corpus",
    "speaker_files": "corpus",
    "target_speakers": "corpus",
    "write_speaker_folders": "corpus",
}

__all__ = [
    "CORPUS_VERSION",
    "HELDOUT_SENTENCE_IDS",
    "SAMPLE_RATE",
    "SENTENCES",
    "SENTENCE_IDS",
    "TARGET_SPEAKERS",
    "TRAIN_SENTENCE_IDS",
    "VOICES",
    "CorpusError",
    "LabBaseFiles",
    "PretrainSettings",
    "Voice",
    "base_speakers",
    "build_corpus",
    "format_summary",
    "lab_base_files",
    "lab_config",
    "list_voices",
    "load_manifest",
    "pack_corpus",
    "sentence_split",
    "speaker_files",
    "target_speakers",
    "write_speaker_folders",
]

if TYPE_CHECKING:
    from .assets import LabBaseFiles, lab_base_files
    from .corpus import (
        CORPUS_VERSION,
        HELDOUT_SENTENCE_IDS,
        SAMPLE_RATE,
        SENTENCE_IDS,
        SENTENCES,
        TARGET_SPEAKERS,
        TRAIN_SENTENCE_IDS,
        VOICES,
        CorpusError,
        Voice,
        base_speakers,
        build_corpus,
        format_summary,
        list_voices,
        load_manifest,
        sentence_split,
        speaker_files,
        target_speakers,
        write_speaker_folders,
    )
    from .pretrain import PretrainSettings, lab_config, pack_corpus


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
