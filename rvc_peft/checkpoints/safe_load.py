"""Reading `.pth` files shared by strangers without ever running their pickle code."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
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
    A file that needs anything else (a class, a function) is refused, never executed.
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
    if is_zip and not zipfile.is_zipfile(path):
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
        raise CheckpointError(path, f"not a readable PyTorch checkpoint ({_first_line(message)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(path, f"truncated or damaged checkpoint ({_first_line(str(err))})") from None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "no details"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp_path)` to a temporary file beside `path`, then rename it into place.

    An existing file at `path` is replaced only when the write succeeded, never half-overwritten.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
