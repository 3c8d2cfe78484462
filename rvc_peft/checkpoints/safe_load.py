"""Reading `.pth` files shared by strangers without ever running their pickle code."""

from __future__ import annotations

import os
import pickle
import re
import secrets
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A model file that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_pth(path: str | os.PathLike) -> Any:
    """Load a PyTorch file with `torch.load(weights_only=True)` on the CPU, with errors that say what is wrong.

    weights_only admits tensors, dicts, lists, strings and numbers: everything RVC WebUI and Applio write.
    A file that needs anything else (a class, a function) is refused, never executed. Every failure to read
    the file is a `CheckpointError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a model file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head.startswith(b"PK")
    if is_zip and not _is_readable_zip(path):
        raise CheckpointError(path, f"truncated or damaged PyTorch zip archive ({size} bytes)")
    if not is_zip and not head.startswith(b"\x80"):
        raise CheckpointError(path, "not a PyTorch checkpoint (unknown file format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        # torch words this as "Unsupported global: GLOBAL x.y" or "unsupported GLOBAL x.y whose module ... is blocked"
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found:
            raise CheckpointError(
                path,
                f"refusing to load: the file asks to run Python code ({found.group(1)}); RVC model files contain "
                "only tensors, numbers and strings, so this one is not a model or has been tampered with",
            ) from None
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({_unpickler_detail(message)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(path, f"truncated or damaged checkpoint ({_first_line(str(err))})") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file is not a checkpoint
        # Garbled pickles fail anywhere inside torch's unpickler (IndexError from an empty stack, KeyError for a
        # memo or storage key that was never written, AssertionError, struct.error, ...): none of those is a bug
        # of ours, all of them mean the bytes are not a checkpoint.
        detail = _first_line(str(err))
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({type(err).__name__}: {detail})") from None


def _is_readable_zip(path: Path) -> bool:
    # zipfile.is_zipfile only swallows OSError; a damaged end-of-archive record raises BadZipFile through it.
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, ValueError, EOFError):
        return False


def _unpickler_detail(message: str) -> str:
    """The reason inside torch's weights-only error text.

    Its first lines only explain the weights_only default and suggest weights_only=False, advice that must not
    reach users holding a stranger's file; the actual reason follows "WeightsUnpickler error:".
    """
    _, marker, rest = message.partition("WeightsUnpickler error:")
    return _first_line(rest) if marker and rest.strip() else _first_line(message)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "no details"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp_path)` to a temporary file beside `path`, then rename it into place.

    An existing file at `path` is replaced only when the write succeeded, never half-overwritten. The file gets
    the permissions a plain `open(path, "w")` would give it: those of the file it replaces, or 0o666 less the
    umask for a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temporary(path: Path) -> Path:
    """A new, empty file beside `path` with the mode open() would give it.

    Not `tempfile.mkstemp`: it creates files 0o600 and that mode would survive the rename, leaving exported voices
    unreadable to other users and services. Creating with 0o666 lets the kernel apply the umask, which (unlike
    reading it with os.umask) is safe while other threads create files.
    """
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file beside {path}")
