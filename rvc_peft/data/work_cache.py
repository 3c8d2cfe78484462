"""The work cache of `build_dataset`: each source file's finished pieces in `OUT_DIR/work/`, so an interrupted or
repeated run only processes new or changed files.

* `OUT_DIR/work/<sha1 of the relative path>.npz` holds one source file's pieces (audio, content features, pitch)
  with a JSON `meta` entry: the relative path, the file's size and mtime when it was listed (a file changed since is
  redone), the dropped slices and, for a file without any usable slice, why it was skipped.
* `OUT_DIR/work/settings.json` records the settings the cache was made with (`cache_settings`), including
  fingerprints of the content encoder and RMVPE weights. `check_work_settings` compares it with this run's: other
  user settings need `overwrite`; a cache that is merely stale (another cache version, changed weights under the same
  path) is cleared and rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write
from .cutting import MIN_SLICE_SECONDS, OVERLAP
from .dataset import INFO_FILE

logger = logging.getLogger(__name__)

WORK_DIR = "work"
CACHE_VERSION = 2
# Settings keys that describe the cache rather than the user's choices: when only these differ, the cache is stale
# (the same --content-encoder / --rmvpe file now holds other weights, or an older rvc-peft wrote the cache) and is
# rebuilt without asking; any other difference is a changed command line and needs --overwrite.
_STALENESS_KEYS = ("cache_version", "fingerprints")
# Files up to this size (configs) are fingerprinted by content; larger ones (weights: 360 MB for RVC's hubert_base.pt
# and rmvpe.pt) by size + mtime, which a re-download or an edit changes, without reading them on every run.
_HASHED_FILE_BYTES = 1 << 20

SourceStamp = dict[str, int]  # {"size": bytes, "mtime_ns": ns} of a source file when it was listed


class DatasetBuildError(ValueError):
    """The dataset cannot be built (nothing usable in the input, conflicting settings, ...)."""


@dataclass
class WorkPiece:
    """One finished piece of a source file, as cached and as written to the dataset."""

    offset: float  # seconds from the start of the source file
    index: int  # the piece's number among the file's cut pieces (dropped pieces keep theirs)
    audio: np.ndarray  # float32 [L], normalised, at the model rate
    phone: np.ndarray  # float32 [F, E] content features at 50 fps
    pitch: np.ndarray | None = None  # int64 [P] coarse pitch at 100 fps (pitch datasets only)
    pitchf: np.ndarray | None = None  # float32 [P] F0 in Hz at 100 fps (pitch datasets only)


@dataclass
class CachedFile:
    """One source file's cached results: its pieces, the slices dropped and, without pieces, why it is skipped."""

    pieces: list[WorkPiece]
    dropped: list[str]
    skip_reason: str | None


def cache_settings(sample_rate: int, version: str, f0_method: str | None, encoder_name: str, per: float,
                   rmvpe_source: str | None, fingerprints: dict[str, Any]) -> dict[str, Any]:
    """What `settings.json` records: everything that changes a cached piece (JSON-ready)."""
    return {"sample_rate": sample_rate, "version": version, "f0_method": f0_method, "content_encoder": encoder_name,
            "rmvpe": rmvpe_source, "per": per, "overlap": OVERLAP, "min_slice_seconds": MIN_SLICE_SECONDS,
            "cache_version": CACHE_VERSION, "fingerprints": fingerprints}


def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    if stat.st_size <= _HASHED_FILE_BYTES:
        return {"size": stat.st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def weights_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of local weights: the resolved path (a Hub snapshot path holds the commit) and each file's
    fingerprint (every non-hidden file of a transformers folder, or the single file)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    return {"path": str(path), "files": {p.name: _file_fingerprint(p) for p in files}}


def state_fingerprint(model: Any) -> str | None:
    """Content hash of an in-memory model's state dict (None for objects without one).

    A model passed in by the caller may have been changed after loading, so its file (if any) proves nothing;
    hashing the tensors costs about 0.5 s for a 95 M-parameter HuBERT.
    """
    import torch

    state_dict = getattr(model, "state_dict", None)
    if not callable(state_dict):
        return None
    digest = hashlib.sha256()
    for name, tensor in state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # byte view: works for bfloat16 too, no copy
    return digest.hexdigest()


def work_path(work_dir: Path, relative: str) -> Path:
    """The cache file of the source file at `relative` (its path below AUDIO_DIR)."""
    return work_dir / (hashlib.sha1(relative.encode()).hexdigest()[:20] + ".npz")


def source_stamp(path: Path) -> SourceStamp:
    """Size and mtime of a source file: a cache entry made from other contents is not used."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def has_work(work_file: Path, relative: str, stamp: SourceStamp) -> bool:
    """Whether `work_file` holds a readable, current entry for `relative` (reads only its metadata)."""
    return _load(work_file, relative, stamp, meta_only=True) is not None


def read_work(work_file: Path, relative: str, stamp: SourceStamp) -> CachedFile | None:
    """The cached results of a source file, or None when absent, stale or unreadable."""
    return _load(work_file, relative, stamp, meta_only=False)


def _load(work_file: Path, relative: str, stamp: SourceStamp, meta_only: bool) -> CachedFile | dict[str, Any] | None:
    """`read_work`, or only the metadata dict with `meta_only`."""
    if not work_file.is_file():
        return None
    try:
        with np.load(work_file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("relative") != relative or meta.get("stamp") != stamp:
                return None
            if meta_only:
                return meta
            pieces = []
            for k, (offset, index) in enumerate(zip(meta["offsets"], meta["indices"])):
                piece = WorkPiece(offset=offset, index=index, audio=data[f"audio_{k}"], phone=data[f"phone_{k}"])
                if f"pitchf_{k}" in data:
                    piece.pitchf = data[f"pitchf_{k}"]
                    piece.pitch = data[f"pitch_{k}"]
                pieces.append(piece)
            return CachedFile(pieces=pieces, dropped=meta["dropped"], skip_reason=meta.get("skip_reason"))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        logger.warning("%s: unreadable work file, recomputing %s", work_file, relative)
        return None


def write_work(work_file: Path, relative: str, stamp: SourceStamp, pieces: list[WorkPiece], dropped: list[str],
               skip_reason: str | None) -> None:
    """Cache one source file's results (atomically: an interrupted run leaves no half-written entry)."""
    meta = {"relative": relative, "stamp": stamp, "dropped": dropped, "skip_reason": skip_reason,
            "offsets": [p.offset for p in pieces], "indices": [p.index for p in pieces]}
    arrays = {"meta": np.array(json.dumps(meta))}
    for k, piece in enumerate(pieces):
        arrays[f"audio_{k}"] = piece.audio
        arrays[f"phone_{k}"] = piece.phone
        if piece.pitchf is not None:
            arrays[f"pitchf_{k}"] = piece.pitchf
            arrays[f"pitch_{k}"] = piece.pitch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: given a path, np.savez would append ".npz" to the temp name
            np.savez(handle, **arrays)

    atomic_write(work_file, write)


def check_work_settings(out_dir: Path, work_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Make `work_dir` a cache for `settings`: keep it when they match, clear it when it is stale or `overwrite`,
    and raise `DatasetBuildError` when the user's settings differ (or `out_dir` holds a dataset without a cache)."""
    settings_file = work_dir / "settings.json"
    previous = None
    if settings_file.is_file():
        try:
            previous = json.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            if not overwrite:
                raise DatasetBuildError(f"{settings_file}: unreadable ({error}); pass overwrite=True (--overwrite) "
                                        "to rebuild the work cache") from error
            previous = {}  # differs from any settings: the cache is cleared below
    elif (out_dir / INFO_FILE).is_file() and not overwrite:
        raise DatasetBuildError(f"{out_dir} already holds a dataset without a work cache (an imported experiment?); "
                                "pass overwrite=True (--overwrite) to replace it")
    if previous is not None and previous != settings and not overwrite:
        # Keys an older cache lacks cannot be compared; the cache_version difference rebuilds it anyway.
        changed = ", ".join(f"{k}: {previous[k]!r} -> {v!r}" for k, v in settings.items()
                            if k not in _STALENESS_KEYS and k in previous and previous[k] != v)
        if changed:
            raise DatasetBuildError(f"{work_dir} was made with other settings ({changed}); pass overwrite=True "
                                    "(--overwrite) to rebuild, or choose another output folder")
        logger.warning("%s is out of date (%s); recomputing every file", work_dir, _staleness(previous, settings))
    if overwrite or previous != settings:
        for stale in work_dir.glob("*.npz"):
            stale.unlink()
    work_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings, indent=2)
    atomic_write(settings_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _staleness(previous: dict[str, Any], settings: dict[str, Any]) -> str:
    """Why a cache with the same user settings cannot be reused, in words."""
    if previous.get("cache_version") != settings["cache_version"]:
        return f"written by another rvc-peft version (cache version {previous.get('cache_version')})"
    old = previous.get("fingerprints") or {}
    changed = []
    for key, value in settings["fingerprints"].items():
        if old.get(key) != value:
            where = value["path"] if isinstance(value, dict) else "the model passed in"
            changed.append(f"the {key.replace('_', ' ')} weights changed ({where})")
    return "; ".join(changed) or "its settings file differs"
