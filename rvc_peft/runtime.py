"""Process-level settings that make long CPU runs faster (imports nothing from the rest of the package).

`retain_freed_memory()`: RVC's decoder allocates and frees tensors of tens to hundreds of MB for every segment
(a 38 s segment at 40 kHz has 1.5 M samples × 32-256 channels per stage). glibc's malloc serves blocks above its
mmap threshold (at most 32 MB) with fresh `mmap`s and returns them with `munmap` on free, so every such tensor is
page-faulted in and zeroed by the kernel again: on a 2-core x86-64 VM a third of the synthesizer's CPU time was
kernel time. Keeping freed memory in the heap for reuse removes that (`benchmarks/bench_convert.py` measures it).
The cost: the process keeps its peak heap until it exits instead of shrinking after a long segment, which is what a
conversion or training process wants anyway. Linux/glibc only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
_applied = False


def retain_freed_memory(max_block_bytes: int = 4 << 30) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of unmapping it (see the module docstring).

    Blocks up to `max_block_bytes` come from the heap, the heap grows in 1 GB steps of address space (memory is
    only used when touched) and is never trimmed. Returns True if applied (now or earlier in this process), False
    where the C library is not glibc. Affects the whole process; call it once, early, in a program (the
    `rvc-peft convert` command does on the CPU), not from library code that others embed.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    int_max = 2**31 - 1  # mallopt takes an int
    settings = ((_M_MMAP_THRESHOLD, min(max_block_bytes, int_max)), (_M_TRIM_THRESHOLD, int_max),
                (_M_TOP_PAD, 1 << 30))
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied
