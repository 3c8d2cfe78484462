"""Reading `.pth` files shared by strangers without ever running their pickle code."""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..utils.files import atomic_write  # noqa: F401 - moved to rvc_peft.utils.files; kept importable here


class CheckpointError(ValueError):
    """A model file that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_pth(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """Load a PyTorch file with `torch.load(weights_only=True)` on the CPU, with errors that say what is wrong.

    weights_only admits tensors, dicts, lists, strings and numbers: everything RVC WebUI and Applio write.
    A file that needs anything else (a class, a function) is refused, never executed. Every failure to read
    the file is a `CheckpointError` naming it. Zip-format files have every member's CRC-32 checked first
    (`verify_zip_crc`). `mmap=True` memory-maps zip-format files (large encoders need not be held twice).
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
    if is_zip:
        if not _is_readable_zip(path):
            raise CheckpointError(path, f"truncated or damaged PyTorch zip archive ({size} bytes)")
        verify_zip_crc(path)
    if not is_zip and not head.startswith(b"\x80"):
        raise CheckpointError(path, "not a PyTorch checkpoint (unknown file format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
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


def verify_zip_crc(path: str | os.PathLike) -> None:
    """Check the CRC-32 of every member of a zip-format `.pth` (torch's own reader never does).

    A flipped bit inside a tensor record otherwise loads as a slightly different weight: a voice that sounds wrong
    with no error anywhere. Reading the whole archive once costs about 0.03 s for a 27 MB base. Raises
    `CheckpointError` naming the file and the first damaged member.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        # a damaged local header or compressed stream fails while reading rather than on the CRC
        raise CheckpointError(path, f"corrupt file (zip archive unreadable: {_first_line(str(err))})") from None
    if bad is not None:
        raise CheckpointError(path, f"corrupt file (CRC check failed for member {bad})")


# The largest |value| a trained weight may have. RVC's weights are small (the voice-lab base peaks at 4.0, in its
# speaker and pitch tables; the random test models at 3.8; ContentVec and RMVPE stay within tens): 1e4 leaves a
# margin of three orders of magnitude while still catching fp16 overflow garbage (up to 65504) and float32 junk.
MAX_WEIGHT_MAGNITUDE = 1e4
# An overlapping view (torch.save keeps `expand`ed tensors as they are) may present more elements than its storage
# holds, up to this many: 16x the largest tensor of any model read here (HuBERT-large's 1024x4096 = 4 M elements).
MAX_VIEW_ELEMENTS = 1 << 26
# Integer tensors that are legitimately part of a state dict (BatchNorm's step counter in RMVPE).
_INTEGER_BUFFERS = ("num_batches_tracked",)
# Statistics rather than trained weights: a BatchNorm variance follows its input's scale, so only finiteness is
# required of them.
_UNBOUNDED_BUFFERS = ("running_mean", "running_var")


def check_weights(state_dict: Mapping[str, Any], file: str | os.PathLike, *, what: str = "") -> None:
    """Refuse weights that would silently make a broken voice: NaN, inf, absurd magnitudes, non-floating dtypes.

    Every floating tensor must be finite with max |value| <= `MAX_WEIGHT_MAGNITUDE` (BatchNorm running statistics:
    finite only); integer, bool or complex tensors are refused except BatchNorm's `num_batches_tracked`; a view
    larger than its storage (a crafted stride-0 tensor) is refused before any pass over it. `what` is prefixed to the tensor name (e.g.
    "adapter 'alice' "). Raises `CheckpointError` naming the file, the tensor and the problem. One pass per tensor
    (`torch.aminmax` propagates NaN and inf), about 10 ms for a 27 MB base.
    """
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            continue  # structure is the readers' business; this checks values
        problem = weight_problem(str(key), tensor)
        if problem is not None:
            raise CheckpointError(file, f"{what}tensor {key!r} {problem}")


def weight_problem(key: str, tensor: torch.Tensor) -> str | None:
    """What is wrong with one weight tensor (see `check_weights`), or None."""
    if not tensor.is_floating_point():
        if key.rsplit(".", 1)[-1] in _INTEGER_BUFFERS and not tensor.is_complex() and tensor.dtype != torch.bool:
            return None
        return f"has {'complex' if tensor.is_complex() else 'integer' if tensor.dtype != torch.bool else 'boolean'} " \
               f"dtype {tensor.dtype} where floating weights are expected"
    if tensor.numel() == 0:
        return None
    held = _storage_elements(tensor)
    if held is not None and tensor.numel() > max(held, MAX_VIEW_ELEMENTS):
        # An expanded (stride-0) view is fine at weight sizes, but a crafted one presents 10^12 elements over a few
        # bytes, and every pass over it (this check included) would run for hours
        return f"is a view of {tensor.numel()} elements over a storage of {held} (a crafted file)"
    low, high = torch.aminmax(tensor.detach())
    low, high = float(low), float(high)
    if math.isnan(low) or math.isnan(high):
        return "contains NaN"
    if math.isinf(low) or math.isinf(high):
        return "contains inf"
    largest = max(abs(low), abs(high))
    if largest > MAX_WEIGHT_MAGNITUDE and key.rsplit(".", 1)[-1] not in _UNBOUNDED_BUFFERS:
        return f"max |value| {largest:.1e} is not a trained weight (RVC weights stay below {MAX_WEIGHT_MAGNITUDE:.0e})"
    return None


def _storage_elements(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().nbytes() // tensor.element_size()
    except (RuntimeError, NotImplementedError):  # tensors without a storage (meta, some subclasses)
        return None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `.safetensors` file on the CPU with errors naming it (empty, truncated, bit-flipped header, folder)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a safetensors file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "file is empty")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(path, f"not a readable safetensors file ({_first_line(str(err))})") from None


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
