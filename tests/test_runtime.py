"""rvc_peft.runtime.retain_freed_memory: freed large buffers are reused instead of being page-faulted in again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "rvc_peft" / "runtime.py"

# Loads runtime.py on its own (it imports nothing from the package, so no torch start-up) and drives glibc's malloc
# directly with the sizes the decoder uses: 64 MiB, above glibc's largest mmap threshold (32 MiB).
SCRIPT = r'''
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("runtime", sys.argv[1])
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
applied = runtime.retain_freed_memory() if sys.argv[2] == "retain" else False
again = runtime.retain_freed_memory() if applied else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 2**20

def faults_of_one_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)  # touch every page, as filling a tensor does
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# the first rounds fault the memory in either way (glibc settles where the block lives), later ones show the policy
faults = [faults_of_one_round() for _ in range(10)]
print(json.dumps({"applied": applied, "again": again, "faults": sum(faults[4:])}))
'''


def _rounds(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(RUNTIME), mode], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_large_blocks_are_reused_instead_of_faulted_in_again():
    default, retained = _rounds("default"), _rounds("retain")
    pages = 6 * 64 * 2**20 // 4096  # six rounds of 64 MiB
    assert default["faults"] > 0.9 * pages  # glibc unmapped the block on free: every page faults again
    assert retained["applied"] and retained["again"]  # applied, and a second call is a no-op that says so
    assert retained["faults"] < 0.05 * pages  # the heap kept it: no page is faulted in again
