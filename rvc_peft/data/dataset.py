"""The rvc-peft training dataset on disk: a `datasets` dataset plus `rvc_dataset.json`.

Layout of an output folder:

    OUT_DIR/rvc_dataset.json   metadata (`RVCDatasetInfo`)
    OUT_DIR/dataset/           `datasets.Dataset.save_to_disk`, one row per training slice
    OUT_DIR/work/              per-source-file cache of `rvc-peft preprocess` (resumable runs)

Columns: `audio` float32 [L] (slice at the model rate, normalised), `phone` float32 [F, E] (content features,
50 fps, not repeated), `pitch` int64 [P] (coarse 1..255, 100 fps) and `pitchf` float32 [P] (Hz) for pitch
datasets only, `speaker_id` int64, `source_file` str, `offset` float32 (seconds into the source file; NaN when
unknown), `slice_index` int64 (position among the pieces cut from the source file; dropped pieces leave gaps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write

logger = logging.getLogger(__name__)

FORMAT_NAME = "rvc-peft-dataset"
FORMAT_VERSION = 1
INFO_FILE = "rvc_dataset.json"
DATASET_DIR = "dataset"
REQUIRED_COLUMNS = ("audio", "phone", "speaker_id", "source_file", "offset", "slice_index")
PITCH_COLUMNS = ("pitch", "pitchf")


class DatasetFormatError(ValueError):
    """A folder is not a readable rvc-peft dataset (the message names the folder and the problem)."""


@dataclass
class RVCDatasetInfo:
    """Metadata of an rvc-peft dataset (the fields of `rvc_dataset.json`)."""

    sample_rate: int
    version: str
    use_f0: bool
    f0_method: str | None
    content_encoder: str
    content_dim: int
    hop_length: int
    num_rows: int = 0
    speakers: list[int] = field(default_factory=list)
    source: str = "preprocess"
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    per: float | None = None
    rmvpe: str | None = None  # where the RMVPE weights came from (f0_method "rmvpe" only)
    skipped: list[dict[str, str]] = field(default_factory=list)
    # Not stored: where the dataset was loaded from / written to, and counters of the run that built it.
    path: str | None = field(default=None, compare=False)
    stats: dict[str, int] = field(default_factory=dict, compare=False)

    def to_json_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path")
        data.pop("stats")
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], path: str | None = None) -> RVCDatasetInfo:
        names = {f.name for f in dataclasses.fields(cls)} - {"path", "stats"}
        missing = {"sample_rate", "version", "use_f0", "content_dim", "num_rows"} - set(data)
        if missing:
            raise DatasetFormatError(f"{path}: {INFO_FILE} lacks the fields {sorted(missing)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs.setdefault("f0_method", None)
        kwargs.setdefault("content_encoder", "unknown")
        kwargs.setdefault("hop_length", int(data["sample_rate"]) // 100)
        return cls(**kwargs, path=path)


def dataset_features(content_dim: int, use_f0: bool):
    """The `datasets.Features` of the table (pitch columns only for pitch datasets)."""
    from datasets import Array2D, Features, List, Value

    columns: dict[str, Any] = {
        "audio": List(Value("float32")),
        "phone": Array2D((None, content_dim), "float32"),
    }
    if use_f0:
        columns["pitch"] = List(Value("int64"))
        columns["pitchf"] = List(Value("float32"))
    columns.update(speaker_id=Value("int64"), source_file=Value("string"), offset=Value("float32"),
                   slice_index=Value("int64"))
    return Features(columns)


BUILD_PREFIX = ".building-"
_LOCK_SUFFIX = ".lock"
# A build folder without a lock file (made before writers took locks) counts as abandoned once nothing in it has
# changed for this long; a live writer touches its files far more often (every batch of rows, every saved shard).
UNLOCKED_STALE_SECONDS = 3600.0


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file `fd` without waiting; False when another process (or another open
    file in this process) holds it, or the filesystem cannot lock. The OS drops a lock when its holder dies,
    SIGKILL and OOM kills included, so a lock that can be taken proves its writer is gone."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _release(fd: int) -> None:
    if os.name == "nt":  # Windows frees locks of a closed file only "eventually": unlock first
        import msvcrt

        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    os.close(fd)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _undo_unfinished_swap(out_dir: Path, folder: Path) -> None:
    """Put back the dataset `out_dir` held before a writer that died inside `DatasetWriter.finish`'s swap.

    `finish` saves `dataset/` and `rvc_dataset.json` in `folder`, then moves the old `dataset/` to
    `folder/previous`, the new one into place, and the json last. So a json still in `folder` means the swap did
    not complete: if the new dataset was already moved in, move it back out, then restore `previous`.
    """
    final, previous = out_dir / DATASET_DIR, folder / "previous"
    if not (folder / INFO_FILE).is_file():
        return  # killed before the swap began (or after it completed): out_dir is consistent
    if not (folder / DATASET_DIR).exists() and final.exists():
        os.replace(final, folder / "unfinished")
    if previous.is_dir() and not final.exists():
        os.replace(previous, final)


def remove_stale_builds(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary `.building-*` folders of writers in `out_dir` that died (a hard kill skips their
    cleanup); returns the folders removed.

    A folder is abandoned when its lock file `.building-XXXX.lock` can be locked: every writer holds that lock
    from before its folder exists until after it is deleted, and the OS releases it when the writer dies, however
    it dies. Locked folders are never touched, whatever their age, and pid reuse cannot fool the rule. Folders
    without a lock file (older rvc-peft versions) are removed only when nothing in them changed for
    `UNLOCKED_STALE_SECONDS`, and so are lock files left without a folder. A writer killed in the middle of
    swapping in its dataset is undone first, so the dataset `out_dir` held before that run is back in place.
    """
    out_dir = Path(out_dir)
    removed = []
    for path in sorted(out_dir.glob(BUILD_PREFIX + "*")):
        if path.name.endswith(_LOCK_SUFFIX):
            folder, lock = path.with_name(path.name[: -len(_LOCK_SUFFIX)]), path
            if folder.exists() or folder.is_symlink():
                continue  # handled with its folder
        elif path.is_dir() and not path.is_symlink():
            folder, lock = path, path.with_name(path.name + _LOCK_SUFFIX)
        else:
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue  # cannot tell whether its writer lives: leave it
        try:
            if fd is None or lock == path:  # no lock to ask, or a lock alone: also wait out the age rule
                try:
                    age = time.time() - (_newest_mtime(folder) if fd is None else lock.stat().st_mtime)
                except OSError:
                    continue  # vanished meanwhile: its writer finished
                if age < UNLOCKED_STALE_SECONDS:
                    continue
            if fd is not None and not _try_lock(fd):
                continue  # a live writer
            if folder.is_dir():
                try:
                    _undo_unfinished_swap(out_dir, folder)
                except OSError as error:  # it may hold the previous dataset: never delete it unrestored
                    logger.warning("cannot restore %s from %s (%s); leaving it for you to inspect", out_dir / DATASET_DIR,
                                   folder, error)
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        finally:
            if fd is not None:
                _release(fd)
        if fd is not None:  # after releasing it: Windows cannot delete an open file
            with contextlib.suppress(OSError):
                lock.unlink()
    return removed


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class DatasetWriter:
    """Streams rows into a new dataset and swaps it into `out_dir` only when `finish` succeeds.

    Rows go to an Arrow file in a temporary folder `out_dir/.building-XXXX`; `finish` turns it into a
    `save_to_disk` folder and replaces `out_dir/dataset` and `out_dir/rvc_dataset.json`. `abort` (or leaving the
    `with` block by an exception) removes the temporary folder and leaves any previous dataset untouched. A new
    writer first removes the folders of writers that died without cleaning up (see `remove_stale_builds`).
    """

    def __init__(self, out_dir: str | os.PathLike, content_dim: int, use_f0: bool) -> None:
        from datasets.arrow_writer import ArrowWriter

        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.content_dim = content_dim
        self.use_f0 = use_f0
        self.features = dataset_features(content_dim, use_f0)
        for folder in remove_stale_builds(self.out_dir):
            logger.info("removed %s, left behind by a build that was killed", folder)
        # The lock file comes first and is locked before the folder exists, so no other writer's cleanup can see
        # this folder unlocked (see remove_stale_builds).
        fd, lock_name = tempfile.mkstemp(prefix=BUILD_PREFIX, suffix=_LOCK_SUFFIX, dir=self.out_dir)
        self._lock_fd: int | None = fd
        self._lock = Path(lock_name)
        self._tmp = self._lock.with_name(self._lock.name[: -len(_LOCK_SUFFIX)])
        try:
            _try_lock(fd)  # where the filesystem cannot lock, other writers' cleanup leaves this folder alone
            self._tmp.mkdir()
            self._writer = ArrowWriter(features=self.features, path=str(self._tmp / "rows.arrow"))
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._release_lock()
            raise
        self._hash = hashlib.sha256()
        self.num_rows = 0
        self.speakers: set[int] = set()

    def add(self, row: dict[str, Any]) -> None:
        """Append one slice (keys = the column names; pitch keys only for pitch datasets)."""
        phone = np.asarray(row["phone"], dtype=np.float32)
        if phone.ndim != 2 or phone.shape[1] != self.content_dim:
            raise ValueError(f"{row['source_file']}: content features of shape {phone.shape}, "
                             f"expected [frames, {self.content_dim}]")
        example = {"audio": np.asarray(row["audio"], dtype=np.float32), "phone": phone}
        if self.use_f0:
            example["pitch"] = np.asarray(row["pitch"], dtype=np.int64)
            example["pitchf"] = np.asarray(row["pitchf"], dtype=np.float32)
        example.update(speaker_id=int(row["speaker_id"]), source_file=str(row["source_file"]),
                       offset=float(row["offset"]), slice_index=int(row["slice_index"]))
        for value in example.values():  # content hash -> the dataset fingerprint (identical data, identical id)
            self._hash.update(np.asarray(value).tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
        self._writer.write(example)
        self.num_rows += 1
        self.speakers.add(example["speaker_id"])

    def finish(self, info: RVCDatasetInfo, progress: bool = True) -> RVCDatasetInfo:
        """Write the dataset and metadata into `out_dir`, replacing a previous one; returns the final info."""
        import datasets
        from datasets.table import MemoryMappedTable
        from datasets.utils import logging as datasets_logging

        try:
            if self.num_rows == 0:
                raise ValueError(f"{self.out_dir}: refusing to write an empty dataset (no rows were added)")
            self._writer.finalize()
            self._writer.close()
            info.num_rows = self.num_rows
            info.speakers = sorted(self.speakers)
            info.content_dim = self.content_dim
            info.use_f0 = self.use_f0
            table = MemoryMappedTable.from_file(str(self._tmp / "rows.arrow"))
            dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=self.features),
                                       fingerprint=self._hash.hexdigest()[:16])
            bars_were_on = datasets_logging.is_progress_bar_enabled()
            if not progress:
                datasets_logging.disable_progress_bar()
            try:
                dataset.save_to_disk(str(self._tmp / DATASET_DIR))
            finally:
                if bars_were_on:
                    datasets_logging.enable_progress_bar()
            del dataset, table
            (self._tmp / "rows.arrow").unlink()
            _write_json_atomic(self._tmp / INFO_FILE, info.to_json_dict())
            final = self.out_dir / DATASET_DIR
            old = self._tmp / "previous"
            if final.exists():
                os.replace(final, old)
            try:
                os.replace(self._tmp / DATASET_DIR, final)
            except OSError:
                if old.exists():
                    os.replace(old, final)
                raise
            os.replace(self._tmp / INFO_FILE, self.out_dir / INFO_FILE)
        finally:
            self.abort()
        info.path = str(self.out_dir)
        return info

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # closing an already-closed writer is fine
            self._writer.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._release_lock()

    def _release_lock(self) -> None:
        # after the folder is gone: until then the lock tells other writers this folder is in use
        if self._lock_fd is not None:
            _release(self._lock_fd)
            self._lock_fd = None
            with contextlib.suppress(OSError):
                self._lock.unlink()

    def __enter__(self) -> DatasetWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()


def _resolve(path: Path) -> tuple[Path, Path]:
    """(folder holding rvc_dataset.json, save_to_disk folder) for either the output folder or its dataset/."""
    if (path / INFO_FILE).is_file():
        return path, path / DATASET_DIR
    if path.name == DATASET_DIR and (path.parent / INFO_FILE).is_file():
        return path.parent, path
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        raise DatasetFormatError(f"{path}: a `datasets` folder without {INFO_FILE}; not an rvc-peft dataset "
                                 "(make one with `rvc-peft preprocess` or `rvc-peft import-experiment`)")
    raise DatasetFormatError(f"{path}: not an rvc-peft dataset ({INFO_FILE} not found)")


def load_rvc_dataset(path: str | os.PathLike) -> tuple[Any, RVCDatasetInfo]:
    """Open a dataset written by `rvc-peft preprocess` / `import-experiment`.

    `path` is the output folder (or its `dataset/` sub-folder). Returns `(datasets.Dataset, RVCDatasetInfo)`;
    raises `DatasetFormatError` for a missing, foreign, damaged or empty dataset.
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such folder")
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: not a folder (expected the output folder of `rvc-peft preprocess`)")
    root, data_dir = _resolve(path)
    try:
        raw = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetFormatError(f"{root / INFO_FILE}: unreadable ({error})") from error
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise DatasetFormatError(f"{root / INFO_FILE}: not an rvc-peft dataset description "
                                 f"(format is {raw.get('format') if isinstance(raw, dict) else raw!r})")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise DatasetFormatError(f"{root}: dataset format version {raw['format_version']} is newer than this "
                                 f"rvc-peft understands ({FORMAT_VERSION}); upgrade rvc-peft")
    info = RVCDatasetInfo.from_json_dict(raw, path=str(root))
    if int(info.num_rows) == 0:
        raise DatasetFormatError(f"{root}: the dataset is empty (0 slices)")
    if not data_dir.is_dir():
        raise DatasetFormatError(f"{root}: {DATASET_DIR}/ is missing (the build did not finish?)")
    try:
        dataset = datasets.load_from_disk(str(data_dir))
    except Exception as error:  # datasets raises FileNotFoundError/ValueError/pyarrow errors for damaged folders
        raise DatasetFormatError(f"{data_dir}: cannot be opened by datasets ({error})") from error
    if not isinstance(dataset, datasets.Dataset):
        raise DatasetFormatError(f"{data_dir}: holds a {type(dataset).__name__}, expected a single Dataset")
    needed = REQUIRED_COLUMNS + (PITCH_COLUMNS if info.use_f0 else ())
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise DatasetFormatError(f"{data_dir}: missing columns {missing}")
    if len(dataset) == 0:
        raise DatasetFormatError(f"{root}: the dataset is empty (0 slices)")
    if len(dataset) != info.num_rows:
        raise DatasetFormatError(f"{root}: {INFO_FILE} says {info.num_rows} rows but the dataset has {len(dataset)}")
    return dataset, info
