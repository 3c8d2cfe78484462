"""Writing the files users see: complete or not at all, never over a file by accident, with errors that name them.

* `atomic_write(path, write)` writes through a temporary file beside `path` and renames it into place, so an
  interrupted or failed write leaves the previous file (or no file) and never half a file. With `overwrite=False`
  the result never replaces anything: it takes the first free name among `path`, "stem (1).ext", "stem (2).ext",
  ... at the moment it is published (claimed atomically with a hard link, which fails when the name exists), and
  the path actually written is returned.
* Files get the mode `open(path, "w")` would give them (0o666 less the umask, or the mode of the file they
  replace), whatever the writer did: safetensors and `tempfile` create 0o600 files.
* A full disk or an exceeded quota raises `DiskFullError` ("no space left on device while writing <path>") naming
  the final path, whichever library was writing: an `OSError` with ENOSPC/EDQUOT, a library error whose message
  carries it (Rust's "os error 28", faiss's strerror text), or an error without an errno (soundfile's "System
  error.", torch's "file write failed") raised while the folder has (almost) no free space left.
* `write_folder_atomically(folder, write)` does the same for a writer that fills a folder (PEFT's
  `save_pretrained`): it writes into a hidden staging folder and moves each finished file into place.
* Unusable destinations get errors that name them: `NotWritableError` (a `PermissionError`: the folder that cannot
  be written, and why), `OutputIsAFolderError`, `NoFolderError` (a file where a folder is needed). All are
  `OSError`s whose text is the message alone.

This module is the bottom layer: it imports nothing else from rvc_peft.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

# Below this much free space, a write error without an errno (soundfile, torch's zip writer) is taken to be a full
# disk: a failing write leaves less than one write buffer (libsndfile and torch write in chunks of at most 1 MiB).
LOW_SPACE_BYTES = 1 << 20
MAX_NUMBERED_NAMES = 10_000

_FULL_PATTERN = re.compile(r"no space left on device|os error 28\b|storagefull|\benospc\b", re.IGNORECASE)
_QUOTA_PATTERN = re.compile(r"disk quota exceeded|os error 122\b|quotaexceeded|\bedquot\b", re.IGNORECASE)


class _PlainMessage(OSError):
    """An OSError whose text is just its message (which names the path), without "[Errno n]" and a repeated path."""

    def __str__(self) -> str:
        return str(self.strerror)


class DiskFullError(_PlainMessage):
    """The disk (or the user's quota) filled up while writing `path`; the file that was there is unchanged."""

    def __init__(self, path: str | os.PathLike, *, quota: bool = False) -> None:
        self.path = str(path)
        message = f"no space left on device while writing {self.path}" + (" (disk quota exceeded)" if quota else "")
        super().__init__(errno.EDQUOT if quota else errno.ENOSPC, message, self.path)


class NotWritableError(_PlainMessage, PermissionError):
    """A folder where the output cannot be created (permissions, read-only mount); the message names it."""


class OutputIsAFolderError(_PlainMessage, IsADirectoryError):
    """A folder sits where an output file should go."""


class NoFolderError(_PlainMessage, NotADirectoryError):
    """A file sits where an output's folder should be."""


class NoFreeNameError(_PlainMessage, FileExistsError):
    """Every candidate name for an output is taken."""


def disk_full_kind(error: BaseException, folder: str | os.PathLike | None = None) -> str | None:
    """"full" or "quota" when `error` (or an error it was raised from) means the disk or quota is full, else None.

    `folder`: where the write went; an `OSError`/`RuntimeError` without an errno counts as a full disk when that
    folder's file system has less than `LOW_SPACE_BYTES` free (call this before deleting the partial file).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return "quota" if current.errno == errno.EDQUOT else "full"
        code = getattr(current, "errno", None)
        if code == errno.ENOSPC:
            return "full"
        if code == getattr(errno, "EDQUOT", -1):
            return "quota"
        text = str(current)
        if _FULL_PATTERN.search(text):
            return "full"
        if _QUOTA_PATTERN.search(text):
            return "quota"
        current = current.__cause__ or current.__context__
    if folder is not None and isinstance(error, (OSError, RuntimeError)) and getattr(error, "errno", None) is None:
        try:
            if shutil.disk_usage(folder).free < LOW_SPACE_BYTES:
                return "full"
        except OSError:
            pass
    return None


@contextmanager
def disk_full_errors(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a disk-full failure inside the block into `DiskFullError(path)`; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:  # any class: libraries have their own (safetensors' SafetensorError is an Exception)
        kind = disk_full_kind(err, folder if folder is not None else _existing_folder(Path(path)))
        if kind is None:
            raise
        raise DiskFullError(path, quota=kind == "quota") from err


def numbered_name(path: Path, n: int) -> Path:
    """`path` with " (n)" after its stem: "a.wav" -> "a (2).wav" (n = 0 gives `path`)."""
    return path if n == 0 else path.with_name(f"{path.stem} ({n}){path.suffix}")


_NUMBERED = re.compile(r"^(?P<stem>.+) \((?P<n>[1-9]\d*)\)$")


def free_name_candidates(path: Path) -> Iterator[Path]:
    """`path`, then the following numbered names: "a.wav", "a (1).wav", ...; "a (1).wav", "a (2).wav", ..."""
    yield path
    found = _NUMBERED.match(path.stem)
    base, first = (path.with_name(found["stem"] + path.suffix), int(found["n"]) + 1) if found else (path, 1)
    for n in range(first, first + MAX_NUMBERED_NAMES):
        yield numbered_name(base, n)


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    overwrite: bool = True,
    avoid: Collection[str | os.PathLike] = (),
) -> Path:
    """Write through `write(tmp_path)` to a temporary file beside `path`, then move it into place; returns the path.

    `overwrite=True`: an existing file at `path` is replaced atomically and only when the write succeeded, keeping
    its mode. `overwrite=False`: nothing is ever replaced; the file goes to the first of `path`, "stem (1).ext",
    "stem (2).ext", ... (after "stem (3).ext" comes "stem (4).ext") that is free when the write has finished and is not in `avoid` (names another writer of the
    same run will use, or inputs), and that path is returned. A name taken by another process between the check and
    the move is never replaced: the move itself fails when the name exists.

    A new file gets the mode `open(path, "w")` would give it (0o666 less the umask), whatever `write` did. The data
    is flushed to disk (fsync) before the move. On any failure nothing is left behind and an existing file is
    unchanged; a full disk or quota raises `DiskFullError` naming `path`, a folder at `path` (with overwrite) an
    `IsADirectoryError`, a folder that cannot be written a `PermissionError` naming it.
    """
    path = Path(path)
    if overwrite and path.is_dir():
        raise OutputIsAFolderError(errno.EISDIR, f"{path} is a folder; cannot write a file there", str(path))
    with disk_full_errors(path, _existing_folder(path)):
        _make_folder(path)
        tmp, mode = _create_temporary(path)
    try:
        write(tmp)
        _flush_to_disk(tmp)
        if overwrite:
            try:
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # a replaced file keeps its mode
            except FileNotFoundError:
                os.chmod(tmp, mode)
            except IsADirectoryError:
                pass
            if path.is_dir():  # appeared while writing
                raise OutputIsAFolderError(errno.EISDIR, f"{path} is a folder; cannot write a file there", str(path))
            os.replace(tmp, path)
            final = path
        else:
            os.chmod(tmp, mode)
            final = _publish_without_replacing(tmp, path, {os.path.realpath(p) for p in avoid})
    except BaseException as err:
        # measured before the partial file is deleted: its blocks are what filled the disk
        kind = disk_full_kind(err, path.parent) if isinstance(err, Exception) else None
        _remove(tmp)
        if kind is not None and not isinstance(err, DiskFullError):
            raise DiskFullError(path, quota=kind == "quota") from err
        raise
    return final


def write_folder_atomically(
    folder: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    carry: Collection[str] = (),
) -> list[Path]:
    """Run `write(staging)` on a new hidden folder inside `folder`, then move every file it wrote into `folder`.

    For writers that fill a folder with plain `open()` calls (PEFT's `save_pretrained`): a failure while writing
    leaves `folder` as it was (each file there is replaced only by a complete one). `carry`: names of files in
    `folder` copied into the staging folder first, for writers that update a file rather than rewrite it (a model
    card). Files keep the mode of the file they replace, or get the mode `open()` gives. Returns the files moved in.
    A full disk raises `DiskFullError` naming the file being written (its final path) or `folder`.
    """
    folder = Path(folder)
    with disk_full_errors(folder, _existing_folder(folder)):
        folder.mkdir(parents=True, exist_ok=True)
    staging = _create_staging_folder(folder)
    try:
        try:
            for name in carry:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, staging / name)
            write(staging)
            written = sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
            for file in written:
                _flush_to_disk(file)
        except Exception as err:  # translated only when the disk is full, re-raised otherwise
            kind = disk_full_kind(err, folder)
            if kind is None or isinstance(err, DiskFullError):
                raise
            raise DiskFullError(_final_name(err, staging, folder), quota=kind == "quota") from err
        mode = _creation_mode(staging)
        moved = []
        for file in written:
            target = folder / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise OutputIsAFolderError(errno.EISDIR, f"{target} is a folder; cannot write a file there", str(target))
            try:
                os.chmod(file, stat.S_IMODE(os.stat(target).st_mode))
            except FileNotFoundError:
                os.chmod(file, mode)
            os.replace(file, target)
            moved.append(target)
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- helpers ---------------------------------------------------------------------------------------------------------

def _existing_folder(path: Path) -> Path:
    """The nearest existing folder at or above `path`'s parent (where free space can be measured)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


_NOT_WRITABLE = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                 errno.EROFS: "read-only file system"}


def _make_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:  # a file where a folder is needed
        raise NoFolderError(errno.ENOTDIR, f"cannot write {path}: {err.filename or path.parent} is a file, "
                            "not a folder", str(path.parent)) from err
    except OSError as err:
        if err.errno not in _NOT_WRITABLE:
            raise
        raise NotWritableError(err.errno, f"cannot create the folder {path.parent} for {path}: "
                               f"{_NOT_WRITABLE[err.errno]}", str(path.parent)) from err


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new, empty file beside `path`, and the mode the kernel gave it: what open() would give `path`.

    Created with 0o666 so that the kernel applies the umask (and any default ACL); reading the mode back is how we
    learn the umask, since `os.umask` can only be read by setting it, which races with other threads creating files.
    Not `tempfile.mkstemp`: its 0o600 would survive the rename.
    """
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno not in _NOT_WRITABLE:
                raise
            raise NotWritableError(err.errno, f"cannot write {path}: the folder {path.parent} is not writable "
                                   f"({_NOT_WRITABLE[err.errno]})", str(path.parent)) from err
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return candidate, mode
    raise NoFreeNameError(errno.EEXIST, f"could not create a temporary file beside {path}", str(path))


def _creation_mode(folder: Path) -> int:
    """The mode a new file in `folder` gets from open() (see `_create_temporary`)."""
    probe, mode = _create_temporary(folder / "mode-probe")
    _remove(probe)
    return mode


def follow_umask(folder: str | os.PathLike) -> None:
    """Give every file directly in `folder` the mode open() would give a new file there (the umask's).

    For folders written by libraries that create their files 0o600 (safetensors) and are then published as a whole
    (training checkpoints): their files should be as readable as every other output.
    """
    folder = Path(folder)
    mode = _creation_mode(folder)
    for entry in folder.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, mode)


def _create_staging_folder(folder: Path) -> Path:
    for _ in range(100):
        candidate = folder / f".tmp-save-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno in _NOT_WRITABLE:
                raise NotWritableError(err.errno, f"cannot write into {folder}: the folder is not writable "
                                       f"({_NOT_WRITABLE[err.errno]})", str(folder)) from err
            if disk_full_kind(err) is not None:
                raise DiskFullError(folder, quota=disk_full_kind(err) == "quota") from err
            raise
        return candidate
    raise NoFreeNameError(errno.EEXIST, f"could not create a staging folder in {folder}", str(folder))


def _final_name(error: BaseException, staging: Path, folder: Path) -> Path:
    """The final path of the staged file `error` names, else `folder`."""
    current: BaseException | None = error
    while current is not None:
        name = getattr(current, "filename", None)
        if isinstance(name, (str, os.PathLike)):
            try:
                return folder / Path(name).resolve().relative_to(staging.resolve())
            except ValueError:
                pass
        current = current.__cause__ or current.__context__
    return folder


def _flush_to_disk(path: Path) -> None:
    """fsync: a delayed write error (quota on NFS, full thin volume) shows here, before the old file is replaced,
    and a crash after the rename cannot leave an empty file where the previous one was."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_without_replacing(tmp: Path, path: Path, avoid: set[str]) -> Path:
    """Give `tmp` the first free name among `path`, "stem (1).ext", ...; never replaces anything."""
    use_links = True
    for candidate in free_name_candidates(path):
        if os.path.realpath(candidate) in avoid:
            continue
        if use_links:
            try:
                os.link(tmp, candidate)  # fails with FileExistsError when the name exists: a no-replace rename
            except FileExistsError:
                continue
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                use_links = False  # a file system without hard links (FAT, some network shares)
            else:
                _remove(tmp)
                return candidate
        # Without hard links: claim the name with an exclusive create, then move the finished file over the
        # (empty, ours) placeholder.
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        try:
            os.replace(tmp, candidate)
        except BaseException:
            _remove(candidate)
            raise
        return candidate
    raise NoFreeNameError(errno.EEXIST, f"no free name for {path} (tried {MAX_NUMBERED_NAMES} numbered names)",
                          str(path))


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
