"""Process-level settings that make long CPU runs faster (imports nothing from the rest of the package).

`retain_freed_memory()`: RVC's decoder allocates and frees tensors of tens to hundreds of MB for every segment
(a 38 s segment at 40 kHz has 1.5 M samples × 32-256 channels per stage). glibc's malloc serves blocks above its
mmap threshold (at most 32 MB) with fresh `mmap`s and returns them with `munmap` on free, so every such tensor is
page-faulted in and zeroed by the kernel again: on a 2-core x86-64 VM a third of the synthesizer's CPU time was
kernel time. Keeping freed memory in the heap for reuse removes that (`benchmarks/bench_convert.py` measures it).
The cost: the process keeps its peak heap until it exits instead of shrinking after a long segment, which is what a
conversion or training process wants anyway. Linux/glibc only; elsewhere it does nothing.

`configure_threads()`: how many CPU threads each training process uses (see `choose_num_threads` for the policy and
the measurement behind it); `single_thread_worker` is the DataLoader workers' `worker_init_fn`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


# --- CPU threads --------------------------------------------------------------------------------------------------

def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what `taskset`, cgroups' cpusets and SLURM allow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def _threads_from_env() -> int | None:
    """OMP_NUM_THREADS as a positive int (what the user, `accelerate launch` or torchrun set), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        threads = int(value.split(",")[0])  # OpenMP allows a per-nesting-level list: "4,2"
    except ValueError:
        return None
    return threads if threads > 0 else None


def omp_threads_set_by_launcher() -> bool:
    """True when OMP_NUM_THREADS was put there by `accelerate launch`/torchrun, not chosen by the user.

    Both set it to 1 for every process they start unless it is already set (accelerate even for a single process),
    which would hold a CPU run to one core. The launcher is this process's parent: it counts as the launcher's
    choice when the parent is one, was started without OMP_NUM_THREADS (its /proc environ: the environment it was
    started with) and without `--num_cpu_threads_per_process`. Anything unreadable (other systems) says False.
    """
    try:
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as handle:
            words = [w.decode(errors="replace") for w in handle.read().split(b"\0") if w]
        with open(f"/proc/{parent}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return False
    launcher = any(os.path.basename(w) in ("accelerate", "torchrun") for w in words) or (
        "torch.distributed.run" in words or "torch.distributed.launch" in words)
    if not launcher or any(w.startswith("--num_cpu_threads_per_process") for w in words):
        return False
    return not any(entry.startswith(b"OMP_NUM_THREADS=") for entry in environ)


def busy_cores(interval: float = 0.25) -> float | None:
    """How many cores other programs keep busy right now: the machine's non-idle CPU time over `interval` seconds
    (from /proc/stat; call it while this process waits, as the trainer's setup does). None off Linux.

    Not the load average: it trails by minutes, so the preprocessing run a user just finished would count as busy.
    """
    import time

    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}  # only the cores this process may use
    except (AttributeError, OSError):
        return None

    def sample() -> tuple[int, int]:
        busy = total = 0
        with open("/proc/stat") as handle:
            for line in handle:
                name, *values = line.split()
                if name in mine:
                    fields = [int(x) for x in values[:8]]  # guest time is already part of user time
                    idle = fields[3] + fields[4]  # idle + iowait
                    busy, total = busy + sum(fields) - idle, total + sum(fields)
        return busy, total

    try:
        busy0, total0 = sample()
        time.sleep(interval)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (busy1 - busy0) / (total1 - total0) * len(mine)


def choose_num_threads(num_processes_per_node: int = 1, requested: int | None = None, *,
                       cores: int | None = None, busy: float | None = None,
                       launcher_set: bool | None = None) -> tuple[int, str]:
    """How many intra-op threads each of `num_processes_per_node` processes should use, and why (for the log).

    1. `requested` (`--num_threads`), when given;
    2. else OMP_NUM_THREADS when the user set it (for `accelerate launch` too: `OMP_NUM_THREADS=4 accelerate
       launch ...` or `--num_cpu_threads_per_process 4`); the 1 that accelerate/torchrun put there by default does
       not count (`launcher_set`, default `omp_threads_set_by_launcher()`);
    3. else `cores // num_processes_per_node` (at least 1); a single process is lowered to the cores left free when
       other programs already keep some busy (`busy`, default `busy_cores()`, measured only when more than one
       thread would run; not for several processes, whose siblings starting up at the same moment would count).

    Why 3's second half: PyTorch's CPU kernels run as GNU OpenMP parallel regions, and a region ends only when all of
    its threads finish. With as many threads as cores while another busy program holds a core, the thousands of
    small regions of an RVC step each wait for a descheduled thread: on a 2-core VM with one busy competitor, a v2
    40k `--loss mel_kl` step took 14-20 s with 2 threads (burning 8-13 s of CPU) against 1.2 s with 1 thread; on
    the idle machine 2 threads took 0.8 s. `cores` (default `available_cores()`) is a parameter
    for tests.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--num_threads must be at least 1, got {requested}")
        return requested, "--num_threads"
    from_env = _threads_from_env()
    if from_env is not None:
        if launcher_set is None:
            launcher_set = omp_threads_set_by_launcher()
        if not launcher_set:
            return from_env, "OMP_NUM_THREADS"
    cores = available_cores() if cores is None else cores
    processes = max(1, num_processes_per_node)
    threads = max(1, cores // processes)
    why = f"{cores} core(s) / {processes} process(es) per machine"
    if from_env is not None:
        why += f"; the launcher's default OMP_NUM_THREADS={from_env} does not count"
    if threads > 1 and processes == 1:  # with several processes per machine their siblings would count as busy
        busy = busy_cores() if busy is None else busy
        if busy is not None:
            free = cores - round(busy)
            if free < threads * processes:
                threads = max(1, free // processes)
                why += (f", fewer because other programs keep {busy:.1f} core(s) busy (OpenMP threads that share "
                        "cores wait on each other; --num_threads overrides)")
    return threads, why


def configure_threads(num_processes_per_node: int = 1, requested: int | None = None) -> int:
    """Set this process's PyTorch intra-op thread count by `choose_num_threads`'s policy; returns the count.

    Called once by the trainer's setup (every process). Only `torch.set_num_threads`: OMP_NUM_THREADS is read
    once, when the OpenMP runtime starts, so changing it here would only mislead child processes.
    """
    import logging

    import torch

    threads, why = choose_num_threads(num_processes_per_node, requested)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logging.getLogger(__name__).info("using %d CPU thread(s) per process (%s)", threads, why)
    return threads


def single_thread_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: one compute thread per worker, so workers and the training process do not
    oversubscribe the cores. PyTorch already gives workers one intra-op thread; this also caps the BLAS/OpenMP pools
    of numpy and SciPy (OpenBLAS starts one thread per core in every worker otherwise)."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only NumPy/SciPy's BLAS pools stay at their default then
        return
    threadpool_limits(limits=1)
