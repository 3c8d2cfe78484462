"""RVC's training-data preparation (`infer/modules/train/preprocess.py` + the f0/feature extraction scripts).

Per source file: read at the model rate -> RVC's cutting (`rvc_peft.data.cutting`: 48 Hz high-pass, silence slicer,
`per`-second pieces, peak filter, normalisation) -> 16 kHz copy -> F0 (100 fps) and content features (50 fps).

`build_dataset` runs that over a folder into an rvc-peft dataset (see `rvc_peft.data.dataset`), caching each
source file's results in `OUT_DIR/work/` (`rvc_peft.data.work_cache`) so an interrupted or repeated run only
processes new/changed files.

Speaker ids: files directly in AUDIO_DIR (and in sub-folders whose name is not a number) get `speaker_id`; a
first-level sub-folder named by a non-negative integer (`AUDIO_DIR/3/...`) holds speaker 3 (Applio's rule).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..features.audio import AudioReadError, load_audio
from .cutting import MIN_SLICE_SECONDS, cut_training_pieces, normalize_piece
from .dataset import DATASET_DIR, INFO_FILE, DatasetWriter, RVCDatasetInfo
from .slicer import Slicer
from .work_cache import (
    WORK_DIR,
    DatasetBuildError,
    SourceStamp,
    WorkPiece,
    cache_settings,
    check_work_settings,
    has_work,
    read_work,
    source_stamp,
    state_fingerprint,
    weights_fingerprint,
    work_path,
    write_work,
)

logger = logging.getLogger(__name__)

CPU_F0_METHODS = ("pm", "harvest", "dio")  # no model: run inside the worker processes


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
    stamp: SourceStamp  # size and mtime when listed: a file changed during the run is redone next time
    sample_rate: int
    per: float
    cpu_f0_method: str | None


@dataclass
class PreparedPiece:
    """One kept piece of a source file before its content features (and model-based pitch) are computed."""

    offset: float  # seconds from the start of the source file
    index: int  # the piece's number among the file's cut pieces
    audio: np.ndarray  # float32 [L], normalised, at the model rate
    audio16k: np.ndarray  # float32 [L16] the same piece at 16 kHz
    pitchf: np.ndarray | None = None  # float32 [P] F0 in Hz at 100 fps, when a model-free method made it already


@dataclass
class PreparedFile:
    """What `_prepare_file` made of one source file (sent back from a worker process)."""

    relative: str
    pieces: list[PreparedPiece] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # why each cut piece that is not in `pieces` was dropped
    error: str | None = None  # why the file could not be processed at all
    seconds: float = 0.0
    silent: bool = False  # nothing above the slicer's threshold
    constant: float | None = None  # the DC level of a file that holds nothing else


@dataclass
class SkippedFile:
    """A source file without any slice in the dataset, and why."""

    file: str  # path relative to AUDIO_DIR
    reason: str


def _prepare_file(task: _Task) -> PreparedFile:
    """Load, slice, normalise, resample to 16 kHz and (for model-free methods) extract F0 for one file."""
    import librosa

    result = PreparedFile(task.relative)
    try:
        audio = load_audio(task.path, task.sample_rate)
        result.seconds = len(audio) / task.sample_rate
        threshold = Slicer(task.sample_rate).threshold
        result.silent = float(np.abs(audio).max()) < threshold
        offset = float(np.mean(audio, dtype=np.float64)) if audio.size else 0.0
        if not result.silent and float(np.abs(audio - offset).max()) < threshold:
            # A constant (DC) level: the high-pass turns it into a short step transient and then silence, which the
            # slicer would cut into "too short" pieces; say what the file is instead.
            result.constant = offset
            return result
        for index, (start, raw) in enumerate(cut_training_pieces(audio, task.sample_rate, task.per)):
            seconds = len(raw) / task.sample_rate
            piece = normalize_piece(raw)
            if piece is None:
                peak = float(np.abs(raw).max()) if raw.size else 0.0
                result.dropped.append(f"slice {index}: " + ("silent" if peak == 0 else f"peak {peak:.2f} > 2.5"))
                continue
            if seconds <= MIN_SLICE_SECONDS:
                result.dropped.append(f"slice {index}: {seconds:.2f} s, too short for RVC training")
                continue
            # The 16 kHz copy is made from the float64 piece and stored as float32, as RVC writes its WAVs.
            audio16k = librosa.resample(piece, orig_sr=task.sample_rate, target_sr=16000,
                                        res_type="soxr_hq").astype(np.float32)
            pitchf = _extract_training_f0(audio16k, task.cpu_f0_method) if task.cpu_f0_method else None
            result.pieces.append(PreparedPiece(start / task.sample_rate, index, piece.astype(np.float32), audio16k,
                                               pitchf))
    except AudioReadError as error:
        result.error = error.reason
    except Exception as error:  # noqa: BLE001 - one broken file must not stop the run; the reason is reported
        logger.debug("%s failed:\n%s", task.path, traceback.format_exc())
        result.error = f"{type(error).__name__}: {error}"
    return result


def _extract_training_f0(audio16k: np.ndarray, method: str, rmvpe_model: Any = None, device: str = "cpu") -> np.ndarray:
    """F0 in Hz at 100 fps as RVC's training extraction computes it: no median filter, each method's native
    length `L // 160 + 1` except pm, which RVC pads to `L // 160`."""
    from ..features.pitch import extract_f0

    p_len = len(audio16k) // 160 + (0 if method == "pm" else 1)
    f0 = extract_f0(audio16k, method, p_len=p_len, filter_radius=0, rmvpe_model=rmvpe_model, device=device)
    return np.asarray(f0, dtype=np.float32)


def _no_slice_reason(result: PreparedFile) -> str:
    """Why a file that was read without error gave no usable slice, in words."""
    if result.constant is not None:
        return (f"no signal: the file is constant (DC only, level {result.constant:+.3f} for {result.seconds:.2f} s, "
                "nothing above -42 dB around it)")
    if result.silent or not result.dropped:
        return f"only silence ({result.seconds:.2f} s, nothing above -42 dB)"
    if all("too short" in d for d in result.dropped):
        return f"too short ({result.seconds:.2f} s); RVC training needs slices longer than {MIN_SLICE_SECONDS} s"
    return f"no usable slice ({'; '.join(result.dropped)})"


# ----------------------------------------------------------------------------------------------------------------
# Sources


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
# Models that run in this process


@dataclass
class _Models:
    """The content encoder and RMVPE `build_dataset` uses, and what identifies their weights in the work cache."""

    content_encoder: Any
    encoder_name: str
    content_dim: int
    rmvpe: Any  # an RMVPE model, its resolved weights file (loaded once a file needs it), or None
    rmvpe_source: str | None  # what the user asked for, as recorded in the settings
    fingerprints: dict[str, Any]


def _resolve_models(content_encoder: Any, rmvpe: Any, version: str, f0_method: str | None, device: str) -> _Models:
    """Load the content encoder given by path and resolve RMVPE's weights file, fingerprinting both."""
    from ..models.config import CONTENT_DIMS

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
        "content_encoder": weights_fingerprint(weights_path) if weights_path else state_fingerprint(content_encoder)}
    rmvpe_source = None
    if f0_method == "rmvpe":
        if rmvpe is None or isinstance(rmvpe, (str, os.PathLike)):
            from ..features.rmvpe import DEFAULT_FILENAME, DEFAULT_HUB_REPO, resolve_rmvpe_file

            rmvpe_source = f"{DEFAULT_HUB_REPO}/{DEFAULT_FILENAME}" if rmvpe is None else os.fspath(rmvpe)
            rmvpe = resolve_rmvpe_file(rmvpe)  # RMVPELoadError (a ValueError) naming the file; loaded only if needed
            fingerprints["rmvpe"] = weights_fingerprint(rmvpe)
        else:
            rmvpe_source = str(getattr(rmvpe, "weights_path", None) or f"{type(rmvpe).__name__} (in memory)")
            fingerprints["rmvpe"] = state_fingerprint(rmvpe)
    return _Models(content_encoder, encoder_name, content_dim, rmvpe, rmvpe_source, fingerprints)


@dataclass
class _Featurizer:
    """Model-based pitch, coarse pitch and content features of one file's pieces (in this process)."""

    f0_method: str | None
    content_encoder: Any
    rmvpe: Any
    device: str

    def __call__(self, pieces: list[PreparedPiece]) -> list[WorkPiece]:
        import torch

        from ..features.pitch import f0_to_coarse

        finished = []
        for piece in pieces:
            pitch = pitchf = None
            if self.f0_method is not None:
                pitchf = piece.pitchf if piece.pitchf is not None else _extract_training_f0(
                    piece.audio16k, self.f0_method, self.rmvpe, self.device)
                pitch = np.asarray(f0_to_coarse(pitchf), dtype=np.int64)
            with torch.inference_mode():
                phone = np.asarray(self.content_encoder.extract(piece.audio16k), dtype=np.float32)
            finished.append(WorkPiece(piece.offset, piece.index, piece.audio, phone, pitch, pitchf))
        return finished


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _BuildStats:
    """Counts of source files, reported in `RVCDatasetInfo.stats` (and by `rvc-peft preprocess`)."""

    processed: int = 0  # prepared and featurized in this run
    reused: int = 0  # taken from the work cache
    skipped: int = 0  # without any slice in the dataset


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
    encoder and RMVPE weights (see `work_cache.weights_fingerprint` / `work_cache.state_fingerprint`). Other
    settings (including another encoder or RMVPE path) raise `DatasetBuildError` unless `overwrite=True`; the same
    paths with changed weights make the cache stale, and every file is recomputed.
    """
    from ..models.config import parse_sample_rate

    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    sample_rate = parse_sample_rate(sample_rate)
    hop_length = _check_build_settings(sample_rate, version, f0_method)
    sources = _find_sources(audio_dir, out_dir)
    models = _resolve_models(content_encoder, rmvpe, version, f0_method, device)
    work_dir = out_dir / WORK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    check_work_settings(out_dir, work_dir, cache_settings(sample_rate, version, f0_method, models.encoder_name, per,
                                                          models.rmvpe_source, models.fingerprints), overwrite)

    # Which files the cache does not hold yet, and the work on them
    cpu_method = f0_method if f0_method in CPU_F0_METHODS else None
    stamps = {relative: source_stamp(path) for path, relative in sources}
    pending = [_Task(str(path), relative, stamps[relative], sample_rate, per, cpu_method) for path, relative in sources
               if not has_work(work_path(work_dir, relative), relative, stamps[relative])]
    stats = _BuildStats(reused=len(sources) - len(pending))
    if f0_method == "rmvpe" and pending and isinstance(models.rmvpe, Path):  # the resolved file fingerprinted above
        from ..features.pitch import load_rmvpe

        models.rmvpe = load_rmvpe(models.rmvpe, device=device)
    featurize = _Featurizer(f0_method, models.content_encoder, models.rmvpe, device)
    errors: dict[str, str] = {}  # relative path -> why it failed in this run

    def finish_file(task: _Task, prepared: PreparedFile) -> None:
        error = _finish_file(task, prepared, featurize, work_dir)
        if error is None:
            stats.processed += 1
        else:
            errors[task.relative] = error

    _prepare_files(pending, finish_file, num_workers=num_workers, cpu_method=cpu_method, progress=progress)

    info = RVCDatasetInfo(sample_rate=sample_rate, version=version, use_f0=f0_method is not None,
                          f0_method=f0_method, content_encoder=models.encoder_name, content_dim=models.content_dim,
                          hop_length=hop_length, per=per, rmvpe=models.rmvpe_source)
    return _write_dataset(audio_dir, out_dir, sources, stamps, errors, info, stats, speaker_id=speaker_id,
                          progress=progress)


def _check_build_settings(sample_rate: int, version: str, f0_method: str | None) -> int:
    """Refuse an unknown RVC version or pitch method (`ValueError`); returns the model's hop length."""
    from ..models.config import CONTENT_DIMS, RVCConfig

    if version not in CONTENT_DIMS:
        raise ValueError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
    hop_length = RVCConfig.from_preset(sample_rate, version, f0_method is not None).hop_length
    if f0_method is not None:
        from ..features.pitch import F0_METHODS

        if f0_method not in F0_METHODS:
            raise ValueError(f"unknown f0 method {f0_method!r}; expected one of {', '.join(F0_METHODS)}")
    return hop_length


def _find_sources(audio_dir: Path, out_dir: Path) -> list[tuple[Path, str]]:
    """`_list_sources`, or `DatasetBuildError` when `audio_dir` is not a folder or holds no files."""
    if not audio_dir.is_dir():
        raise DatasetBuildError(f"{audio_dir}: not a folder")
    sources = _list_sources(audio_dir, out_dir)
    if not sources:
        raise DatasetBuildError(f"{audio_dir}: no files found (expected wav/flac/ogg/mp3 recordings)")
    return sources


def _prepare_files(pending: list[_Task], finish: Callable[[_Task, PreparedFile], None], *, num_workers: int,
                   cpu_method: str | None, progress: bool) -> None:
    """`_prepare_file` on every task, in this process or in `num_workers` worker processes; `finish(task, result)`
    runs in this process, in task order."""
    from tqdm.auto import tqdm

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
                finish(task, future.result())
                bar.update()
    else:
        for task in pending:
            finish(task, _prepare_file(task))
            bar.update()
    bar.close()


def _finish_file(task: _Task, prepared: PreparedFile, featurize: _Featurizer, work_dir: Path) -> str | None:
    """Featurise a prepared file and cache the result (a file without slices is cached with its skip reason).
    Returns why the file failed (it is then not cached, and retried by the next run), or None."""
    relative = prepared.relative
    error = prepared.error
    pieces: list[WorkPiece] = []
    if error is None:
        try:
            pieces = featurize(prepared.pieces)
        except Exception as exc:  # noqa: BLE001 - reported per file; the run goes on with the others
            logger.debug("%s failed:\n%s", relative, traceback.format_exc())
            error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        logger.warning("skipping %s: %s", relative, error)
        return error
    reason = None
    if not pieces:
        reason = _no_slice_reason(prepared)
        logger.warning("skipping %s: %s", relative, reason)
    elif prepared.dropped:
        logger.info("%s: %d slices, dropped %s", relative, len(pieces), "; ".join(prepared.dropped))
    write_work(work_path(work_dir, relative), relative, task.stamp, pieces, prepared.dropped, reason)
    return None


def _write_dataset(audio_dir: Path, out_dir: Path, sources: list[tuple[Path, str]], stamps: dict[str, SourceStamp],
                   errors: dict[str, str], info: RVCDatasetInfo, stats: _BuildStats, *, speaker_id: int,
                   progress: bool) -> RVCDatasetInfo:
    """Assemble the dataset from the work cache, in source order; `DatasetBuildError` when no slice is usable."""
    from tqdm.auto import tqdm

    work_dir = out_dir / WORK_DIR
    skipped: list[SkippedFile] = []
    with DatasetWriter(out_dir, info.content_dim, info.use_f0) as writer:
        for _, relative in tqdm(sources, desc="assemble", unit="file", disable=not progress):
            cached = read_work(work_path(work_dir, relative), relative, stamps[relative])
            if cached is None:  # failed in this run: reported above
                skipped.append(SkippedFile(relative, errors.get(relative, "not processed")))
                continue
            if cached.skip_reason:
                skipped.append(SkippedFile(relative, cached.skip_reason))
                continue
            for piece in cached.pieces:
                row = {"audio": piece.audio, "phone": piece.phone, "speaker_id": speaker_for(relative, speaker_id),
                       "source_file": relative, "offset": piece.offset, "slice_index": piece.index}
                if info.use_f0:
                    row["pitch"], row["pitchf"] = piece.pitch, piece.pitchf
                writer.add(row)
        info.skipped = [dataclasses.asdict(item) for item in skipped]
        stats.skipped = len(skipped)
        info.stats = dataclasses.asdict(stats)
        if writer.num_rows == 0:
            raise DatasetBuildError(f"{audio_dir}: no usable audio; nothing was written. Skipped files:\n"
                                    + _format_skipped(skipped))
        info = writer.finish(info, progress=progress)
    if skipped:
        logger.warning("%d of %d files skipped:\n%s", len(skipped), len(sources), _format_skipped(skipped))
    logger.info("dataset of %d slices written to %s", info.num_rows, out_dir)
    return info


def _format_skipped(skipped: list[SkippedFile]) -> str:
    return "\n".join(f"  {item.file}: {item.reason}" for item in skipped) or "  (none)"
