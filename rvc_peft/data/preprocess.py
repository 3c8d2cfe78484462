"""RVC's training-data preparation (`infer/modules/train/preprocess.py` + the f0/feature extraction scripts).

Per source file: read at the model rate -> 48 Hz 5th-order Butterworth high-pass (causal `lfilter`) -> silence
slicer -> pieces of `per` seconds every `per − 0.3` s (the tail rule below) -> drop pieces with max|x| > 2.5 ->
normalise `x/max|x|·0.675 + 0.25·x` -> 16 kHz copy -> F0 (100 fps) and content features (50 fps).

`build_dataset` runs that over a folder into an rvc-peft dataset (see `rvc_peft.data.dataset`), caching each
source file's results in `OUT_DIR/work/` so an interrupted or repeated run only processes new/changed files.

Speaker ids: files directly in AUDIO_DIR (and in sub-folders whose name is not a number) get `speaker_id`; a
first-level sub-folder named by a non-negative integer (`AUDIO_DIR/3/...`) holds speaker 3 (Applio's rule).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import traceback
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..features.audio import AudioReadError, load_audio
from ..utils.files import atomic_write
from .dataset import DATASET_DIR, INFO_FILE, DatasetWriter, RVCDatasetInfo
from .slicer import Slicer

logger = logging.getLogger(__name__)

OVERLAP = 0.3
MAX_PEAK = 2.5  # pieces louder than this are dropped (RVC: "filtered")
NORM_MAX, NORM_ALPHA = 0.9, 0.75
HIGHPASS_HZ = 48
# RVC's training loader drops items whose length estimate filesize // (3·hop) is <= 100 frames, i.e. float32
# slices of about 0.75 s or less (at every sample rate, since hop = sr / 100). We drop them here, loudly.
MIN_SLICE_SECONDS = 0.75
CPU_F0_METHODS = ("pm", "harvest", "dio")  # no model: run inside the worker processes
WORK_DIR = "work"


class DatasetBuildError(ValueError):
    """The dataset cannot be built (nothing usable in the input, conflicting settings, ...)."""


@lru_cache(maxsize=8)
def _highpass_coefficients(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import butter

    return butter(N=5, Wn=HIGHPASS_HZ, btype="high", fs=sample_rate)


def highpass(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RVC's 48 Hz high-pass (one direction, as in training): `[L]` -> float64 `[L]`."""
    from scipy.signal import lfilter

    b, a = _highpass_coefficients(sample_rate)
    return lfilter(b, a, np.asarray(audio, dtype=np.float64))


def segment_bounds(length: int, sample_rate: int, per: float = 3.7, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """Sample ranges RVC cuts from one slicer chunk of `length` samples.

    A piece of `int(per·sr)` samples starts every `per − overlap` seconds while more than `(per + overlap)·sr`
    samples remain from its start; the remainder (at most per + overlap seconds) becomes the last piece.
    """
    bounds = []
    index = 0
    while True:
        start = int(sample_rate * (per - overlap) * index)  # same float expression as RVC
        index += 1
        if length - start > (per + overlap) * sample_rate:
            bounds.append((start, start + int(per * sample_rate)))
        else:
            bounds.append((start, length))
            return bounds


def normalize_piece(piece: np.ndarray) -> np.ndarray | None:
    """RVC's loudness normalisation; None for pieces RVC drops (peak above 2.5) or that are digital silence."""
    peak = float(np.abs(piece).max()) if piece.size else 0.0
    if peak > MAX_PEAK or peak == 0.0:
        return None
    return piece / peak * (NORM_MAX * NORM_ALPHA) + (1 - NORM_ALPHA) * piece


def cut_training_pieces(audio: np.ndarray, sample_rate: int, per: float = 3.7,
                        overlap: float = OVERLAP) -> list[tuple[int, np.ndarray]]:
    """High-pass, slice at silences and cut into pieces: `[(start sample in audio, raw piece float64)]`."""
    filtered = highpass(audio, sample_rate)
    pieces = []
    for chunk_start, chunk_end in Slicer(sample_rate).slice_positions(filtered):
        for start, end in segment_bounds(chunk_end - chunk_start, sample_rate, per, overlap):
            pieces.append((chunk_start + start, filtered[chunk_start + start: chunk_start + end]))
    return pieces


def slice_for_training(audio: np.ndarray, sample_rate: int, per: float = 3.7,
                       overlap: float = OVERLAP) -> list[tuple[float, np.ndarray]]:
    """RVC's preprocessing of one file's audio `[L]`: `[(offset in seconds, normalised float32 piece)]`."""
    out = []
    for start, raw in cut_training_pieces(audio, sample_rate, per, overlap):
        piece = normalize_piece(raw)
        if piece is not None:
            out.append((start / sample_rate, piece.astype(np.float32)))
    return out


def speaker_for(relative_path: str, default: int = 0) -> int:
    """Speaker id of a file from its path relative to AUDIO_DIR (see the module docstring)."""
    parts = Path(relative_path).parts
    return int(parts[0]) if len(parts) > 1 and parts[0].isascii() and parts[0].isdigit() else default


# ----------------------------------------------------------------------------------------------------------------
# Per-file work (runs in worker processes when num_workers > 0: keep it free of torch models)


@dataclass
class _Task:
    path: str
    relative: str
    stamp: dict[str, int]  # size and mtime when listed: a file changed during the run is redone next time
    sample_rate: int
    per: float
    cpu_f0_method: str | None


def _prepare_file(task: _Task) -> dict[str, Any]:
    """Load, slice, normalise, resample to 16 kHz and (for model-free methods) extract F0 for one file."""
    import librosa

    result: dict[str, Any] = {"relative": task.relative, "pieces": [], "dropped": [], "error": None}
    try:
        audio = load_audio(task.path, task.sample_rate)
        result["seconds"] = len(audio) / task.sample_rate
        threshold = Slicer(task.sample_rate).threshold
        result["silent"] = float(np.abs(audio).max()) < threshold
        offset = float(np.mean(audio, dtype=np.float64)) if audio.size else 0.0
        if not result["silent"] and float(np.abs(audio - offset).max()) < threshold:
            # A constant (DC) level: the high-pass turns it into a short step transient and then silence, which the
            # slicer would cut into "too short" pieces; say what the file is instead.
            result["constant"] = offset
            return result
        for index, (start, raw) in enumerate(cut_training_pieces(audio, task.sample_rate, task.per)):
            seconds = len(raw) / task.sample_rate
            piece = normalize_piece(raw)
            if piece is None:
                peak = float(np.abs(raw).max()) if raw.size else 0.0
                result["dropped"].append(f"slice {index}: " + ("silent" if peak == 0 else f"peak {peak:.2f} > 2.5"))
                continue
            if seconds <= MIN_SLICE_SECONDS:
                result["dropped"].append(f"slice {index}: {seconds:.2f} s, too short for RVC training")
                continue
            # The 16 kHz copy is made from the float64 piece and stored as float32, as RVC writes its WAVs.
            audio16k = librosa.resample(piece, orig_sr=task.sample_rate, target_sr=16000, res_type="soxr_hq")
            entry = {"offset": start / task.sample_rate, "index": index, "audio": piece.astype(np.float32),
                     "audio16k": audio16k.astype(np.float32)}
            if task.cpu_f0_method:
                entry["pitchf"] = _extract_training_f0(entry["audio16k"], task.cpu_f0_method)
            result["pieces"].append(entry)
    except AudioReadError as error:
        result["error"] = error.reason
    except Exception as error:  # noqa: BLE001 - one broken file must not stop the run; the reason is reported
        logger.debug("%s failed:\n%s", task.path, traceback.format_exc())
        result["error"] = f"{type(error).__name__}: {error}"
    return result


def _extract_training_f0(audio16k: np.ndarray, method: str, rmvpe_model: Any = None, device: str = "cpu") -> np.ndarray:
    """F0 in Hz at 100 fps as RVC's training extraction computes it: no median filter, each method's native
    length `L // 160 + 1` except pm, which RVC pads to `L // 160`."""
    from ..features.pitch import extract_f0

    p_len = len(audio16k) // 160 + (0 if method == "pm" else 1)
    f0 = extract_f0(audio16k, method, p_len=p_len, filter_radius=0, rmvpe_model=rmvpe_model, device=device)
    return np.asarray(f0, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Work cache


CACHE_VERSION = 2
# Settings keys that describe the cache rather than the user's choices: when only these differ, the cache is stale
# (the same --content-encoder / --rmvpe file now holds other weights, or an older rvc-peft wrote the cache) and is
# rebuilt without asking; any other difference is a changed command line and needs --overwrite.
_STALENESS_KEYS = ("cache_version", "fingerprints")
# Files up to this size (configs) are fingerprinted by content; larger ones (weights: 360 MB for RVC's hubert_base.pt
# and rmvpe.pt) by size + mtime, which a re-download or an edit changes, without reading them on every run.
_HASHED_FILE_BYTES = 1 << 20


def _settings(sample_rate: int, version: str, f0_method: str | None, encoder_name: str, per: float,
              rmvpe_source: str | None, fingerprints: dict[str, Any]) -> dict[str, Any]:
    return {"sample_rate": sample_rate, "version": version, "f0_method": f0_method, "content_encoder": encoder_name,
            "rmvpe": rmvpe_source, "per": per, "overlap": OVERLAP, "min_slice_seconds": MIN_SLICE_SECONDS,
            "cache_version": CACHE_VERSION, "fingerprints": fingerprints}


def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    if stat.st_size <= _HASHED_FILE_BYTES:
        return {"size": stat.st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _weights_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of local weights: the resolved path (a Hub snapshot path holds the commit) and each file's
    fingerprint (every non-hidden file of a transformers folder, or the single file)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    return {"path": str(path), "files": {p.name: _file_fingerprint(p) for p in files}}


def _state_fingerprint(model: Any) -> str | None:
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


def _work_path(work_dir: Path, relative: str) -> Path:
    return work_dir / (hashlib.sha1(relative.encode()).hexdigest()[:20] + ".npz")


def _source_stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_work(work_file: Path, relative: str, stamp: dict[str, int], meta_only: bool = False) -> dict[str, Any] | None:
    """The cached pieces of a source file (only its metadata with `meta_only`), or None when absent, stale or
    unreadable."""
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
                entry = {"offset": offset, "index": index, "audio": data[f"audio_{k}"], "phone": data[f"phone_{k}"]}
                if f"pitchf_{k}" in data:
                    entry["pitchf"] = data[f"pitchf_{k}"]
                    entry["pitch"] = data[f"pitch_{k}"]
                pieces.append(entry)
            return {"pieces": pieces, "dropped": meta["dropped"], "skip_reason": meta.get("skip_reason")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        logger.warning("%s: unreadable work file, recomputing %s", work_file, relative)
        return None


def _write_work(work_file: Path, relative: str, stamp: dict[str, int], pieces: list[dict[str, Any]],
                dropped: list[str], skip_reason: str | None) -> None:
    meta = {"relative": relative, "stamp": stamp, "dropped": dropped, "skip_reason": skip_reason,
            "offsets": [p["offset"] for p in pieces], "indices": [p["index"] for p in pieces]}
    arrays = {"meta": np.array(json.dumps(meta))}
    for k, p in enumerate(pieces):
        arrays[f"audio_{k}"] = p["audio"]
        arrays[f"phone_{k}"] = p["phone"]
        if "pitchf" in p:
            arrays[f"pitchf_{k}"] = p["pitchf"]
            arrays[f"pitch_{k}"] = p["pitch"]
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: given a path, np.savez would append ".npz" to the temp name
            np.savez(handle, **arrays)

    atomic_write(work_file, write)


def _check_work_settings(out_dir: Path, work_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
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


def _is_dataset_folder(folder: Path) -> bool:
    """A folder `build_dataset` (or `import-experiment`) wrote: never recordings."""
    return (folder / INFO_FILE).is_file() or (folder / WORK_DIR / "settings.json").is_file()


def _list_sources(audio_dir: Path, out_dir: Path) -> list[tuple[Path, str]]:
    """Every non-hidden regular file under `audio_dir` (sorted by relative path), except the dataset's own files.

    Skipped: `out_dir` when it lies inside `audio_dir`, any other dataset folder there (an earlier build into
    another output folder), and, when `out_dir` is `audio_dir` itself, its work cache, dataset and info file, so
    outputs are never listed as recordings.
    """
    out_resolved = out_dir.resolve()
    found = []
    for root, dirs, files in os.walk(audio_dir):
        root_path = Path(root)
        own_outputs = root_path.resolve() == out_resolved  # the output folder is the recordings folder
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (root_path / d).resolve() != out_resolved
            and not _is_dataset_folder(root_path / d) and not (own_outputs and d in (WORK_DIR, DATASET_DIR))
        )
        for name in files:
            if not name.startswith(".") and not (own_outputs and name == INFO_FILE):
                path = root_path / name
                found.append((path, path.relative_to(audio_dir).as_posix()))
    return sorted(found, key=lambda item: item[1])


# ----------------------------------------------------------------------------------------------------------------


def build_dataset(
    audio_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sample_rate: int | str,
    version: str,
    f0_method: str | None,
    content_encoder: Any,
    speaker_id: int = 0,
    per: float = 3.7,
    num_workers: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    rmvpe: Any = None,
) -> RVCDatasetInfo:
    """Turn a folder of recordings into an rvc-peft dataset in `out_dir` (see the module docstring).

    `content_encoder`: a `ContentEncoder` (anything with `extract(wav16k [L]) -> [F, E]`, `output_dim`,
    `name_or_path`) or a path/hub id for `load_content_encoder`. `f0_method`: one of `F0_METHODS`, or None for a
    no-pitch dataset. `rmvpe`: an RMVPE model or a path/hub id (default: `load_rmvpe()`), used for "rmvpe".
    Files that cannot be used are reported by name and listed in `info.skipped`; the build fails with
    `DatasetBuildError` only when no slice at all is usable, leaving any previous dataset in place.
    `num_workers > 0` loads, slices and runs model-free pitch methods (pm, harvest, dio) in worker processes
    (forkserver/spawn: a calling script needs the usual `if __name__ == "__main__":` guard); the content
    encoder and model-based pitch (rmvpe, crepe, fcpe) run in this process. Output does not depend on it.

    Reuse: `OUT_DIR/work/settings.json` records the settings, the RMVPE source and fingerprints of the content
    encoder and RMVPE weights (see `_weights_fingerprint` / `_state_fingerprint`). Other settings (including another
    encoder or RMVPE path) raise `DatasetBuildError` unless `overwrite=True`; the same paths with changed weights
    make the cache stale, and every file is recomputed.
    """
    import torch
    from tqdm.auto import tqdm

    from ..models.config import CONTENT_DIMS, RVCConfig, parse_sample_rate

    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    sample_rate = parse_sample_rate(sample_rate)
    if version not in CONTENT_DIMS:
        raise ValueError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
    hop_length = RVCConfig.from_preset(sample_rate, version, f0_method is not None).hop_length
    if f0_method is not None:
        from ..features.pitch import F0_METHODS

        if f0_method not in F0_METHODS:
            raise ValueError(f"unknown f0 method {f0_method!r}; expected one of {', '.join(F0_METHODS)}")
    if not audio_dir.is_dir():
        raise DatasetBuildError(f"{audio_dir}: not a folder")
    sources = _list_sources(audio_dir, out_dir)
    if not sources:
        raise DatasetBuildError(f"{audio_dir}: no files found (expected wav/flac/ogg/mp3 recordings)")
    encoder_path = None
    if isinstance(content_encoder, (str, os.PathLike)):
        from ..features.content_encoder import load_content_encoder

        encoder_path = os.fspath(content_encoder)
        content_encoder = load_content_encoder(encoder_path, version, device=device)
    content_dim = int(getattr(content_encoder, "output_dim", CONTENT_DIMS[version]))
    if content_dim != CONTENT_DIMS[version]:
        logger.warning("the content encoder gives %d-d features; RVC %s models take %d-d ones", content_dim, version,
                       CONTENT_DIMS[version])
    encoder_name = str(getattr(content_encoder, "name_or_path", None) or type(content_encoder).__name__)
    # Which weights made the cached features and F0: a name alone would let a replaced file (or another model
    # object under the same name) silently reuse the old results. Loaded here from a path, the model is identified
    # by its files; passed in as an object, only by its tensors.
    weights_path = getattr(content_encoder, "weights_path", None) if encoder_path is not None else None
    fingerprints: dict[str, Any] = {
        "content_encoder": _weights_fingerprint(weights_path) if weights_path else _state_fingerprint(content_encoder)}
    rmvpe_source = None
    if f0_method == "rmvpe":
        if rmvpe is None or isinstance(rmvpe, (str, os.PathLike)):
            from ..features.rmvpe import DEFAULT_FILENAME, DEFAULT_HUB_REPO, resolve_rmvpe_file

            rmvpe_source = f"{DEFAULT_HUB_REPO}/{DEFAULT_FILENAME}" if rmvpe is None else os.fspath(rmvpe)
            rmvpe = resolve_rmvpe_file(rmvpe)  # RMVPELoadError (a ValueError) naming the file; loaded only if needed
            fingerprints["rmvpe"] = _weights_fingerprint(rmvpe)
        else:
            rmvpe_source = str(getattr(rmvpe, "weights_path", None) or f"{type(rmvpe).__name__} (in memory)")
            fingerprints["rmvpe"] = _state_fingerprint(rmvpe)

    work_dir = out_dir / WORK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_work_settings(out_dir, work_dir, _settings(sample_rate, version, f0_method, encoder_name, per,
                                                      rmvpe_source, fingerprints), overwrite)

    cpu_method = f0_method if f0_method in CPU_F0_METHODS else None
    pending, skipped, errors = [], [], {}
    stats = {"processed": 0, "reused": 0, "skipped": 0}
    stamps = {relative: _source_stamp(path) for path, relative in sources}
    for path, relative in sources:
        if _read_work(_work_path(work_dir, relative), relative, stamps[relative], meta_only=True) is None:
            pending.append(_Task(str(path), relative, stamps[relative], sample_rate, per, cpu_method))
        else:
            stats["reused"] += 1
    if f0_method == "rmvpe" and pending and isinstance(rmvpe, Path):  # the resolved file fingerprinted above
        from ..features.pitch import load_rmvpe

        rmvpe = load_rmvpe(rmvpe, device=device)

    def featurise(pieces: list[dict[str, Any]]) -> None:
        """Model-based pitch, coarse pitch and content features of one file's pieces (in this process)."""
        from ..features.pitch import f0_to_coarse

        for entry in pieces:
            if f0_method is not None:
                if "pitchf" not in entry:
                    entry["pitchf"] = _extract_training_f0(entry["audio16k"], f0_method, rmvpe, device)
                entry["pitch"] = np.asarray(f0_to_coarse(entry["pitchf"]), dtype=np.int64)
            with torch.inference_mode():
                entry["phone"] = np.asarray(content_encoder.extract(entry.pop("audio16k")), dtype=np.float32)

    def finish_file(task: _Task, result: dict[str, Any]) -> None:
        relative = result["relative"]
        pieces = result["pieces"]
        if result["error"] is None:
            try:
                featurise(pieces)
            except Exception as error:  # noqa: BLE001 - reported per file; the run goes on with the others
                logger.debug("%s failed:\n%s", relative, traceback.format_exc())
                result["error"] = f"{type(error).__name__}: {error}"
        if result["error"] is not None:
            logger.warning("skipping %s: %s", relative, result["error"])
            errors[relative] = result["error"]
            return
        reason = None
        if not pieces:
            reason = _no_slice_reason(result)
            logger.warning("skipping %s: %s", relative, reason)
        elif result["dropped"]:
            logger.info("%s: %d slices, dropped %s", relative, len(pieces), "; ".join(result["dropped"]))
        _write_work(_work_path(work_dir, relative), relative, task.stamp, pieces, result["dropped"], reason)
        stats["processed"] += 1

    bar = tqdm(total=len(pending), desc="preprocess", unit="file", disable=not progress)
    if num_workers > 0 and len(pending) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # forkserver: workers fork from one server that imported this module once (spawn would pay the
        # torch/librosa import in every worker; plain fork is unsafe after torch has started its threads).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if context.get_start_method() == "forkserver":
            # (missing optional modules are skipped by the server)
            pitch_modules = ["rvc_peft.features.pitch", "parselmouth", "pyworld"] if cpu_method else []
            context.set_forkserver_preload([__name__, "librosa.core.audio", "scipy.signal", *pitch_modules])
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            # In order, with at most 2 files per worker in flight, so finished audio never piles up in memory.
            tasks = iter(pending)
            in_flight = deque((t, pool.submit(_prepare_file, t)) for t in itertools.islice(tasks, 2 * num_workers))
            while in_flight:
                task, future = in_flight.popleft()
                following = next(tasks, None)
                if following is not None:
                    in_flight.append((following, pool.submit(_prepare_file, following)))
                finish_file(task, future.result())
                bar.update()
    else:
        for task in pending:
            finish_file(task, _prepare_file(task))
            bar.update()
    bar.close()

    info = RVCDatasetInfo(sample_rate=sample_rate, version=version, use_f0=f0_method is not None,
                          f0_method=f0_method, content_encoder=encoder_name, content_dim=content_dim,
                          hop_length=hop_length, per=per, rmvpe=rmvpe_source)
    with DatasetWriter(out_dir, content_dim, f0_method is not None) as writer:
        for _, relative in tqdm(sources, desc="assemble", unit="file", disable=not progress):
            cached = _read_work(_work_path(work_dir, relative), relative, stamps[relative])
            if cached is None:  # failed in this run: reported above
                skipped.append({"file": relative, "reason": errors.get(relative, "not processed")})
                continue
            if cached["skip_reason"]:
                skipped.append({"file": relative, "reason": cached["skip_reason"]})
                continue
            for entry in cached["pieces"]:
                row = {"audio": entry["audio"], "phone": entry["phone"], "speaker_id": speaker_for(relative, speaker_id),
                       "source_file": relative, "offset": entry["offset"], "slice_index": entry["index"]}
                if f0_method is not None:
                    row["pitch"], row["pitchf"] = entry["pitch"], entry["pitchf"]
                writer.add(row)
        info.skipped = skipped
        stats["skipped"] = len(skipped)
        info.stats = stats
        if writer.num_rows == 0:
            raise DatasetBuildError(f"{audio_dir}: no usable audio; nothing was written. Skipped files:\n"
                                    + _format_skipped(skipped))
        info = writer.finish(info, progress=progress)
    if skipped:
        logger.warning("%d of %d files skipped:\n%s", len(skipped), len(sources), _format_skipped(skipped))
    logger.info("dataset of %d slices written to %s", info.num_rows, out_dir)
    return info


def _no_slice_reason(result: dict[str, Any]) -> str:
    seconds = result.get("seconds", 0.0)
    if result.get("constant") is not None:
        return (f"no signal: the file is constant (DC only, level {result['constant']:+.3f} for {seconds:.2f} s, "
                "nothing above -42 dB around it)")
    if result.get("silent") or not result["dropped"]:
        return f"only silence ({seconds:.2f} s, nothing above -42 dB)"
    if all("too short" in d for d in result["dropped"]):
        return f"too short ({seconds:.2f} s); RVC training needs slices longer than {MIN_SLICE_SECONDS} s"
    return f"no usable slice ({'; '.join(result['dropped'])})"


def _format_skipped(skipped: list[dict[str, str]]) -> str:
    return "\n".join(f"  {item['file']}: {item['reason']}" for item in skipped) or "  (none)"
