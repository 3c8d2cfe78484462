"""rvc_peft.runtime.retain_freed_memory: freed large buffers are reused instead of being page-faulted in again."""

import json
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, resource, sys
import torch
from rvc_peft.runtime import retain_freed_memory

applied = retain_freed_memory() if sys.argv[1] == "retain" else False
again = retain_freed_memory() if applied else False

def faults_of_one_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
    del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# the first rounds fault the memory in either way (glibc settles where the block lives), later ones show the policy
faults = [faults_of_one_round() for _ in range(10)]
print(json.dumps({"applied": applied, "again": again, "faults": sum(faults[4:])}))
'''


def _round(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_second_large_allocation_reuses_memory_instead_of_faulting_it_in():
    default, retained = _round("default"), _round("retain")
    pages = 6 * 64 * 2**20 // 4096  # six rounds of 64 MiB
    assert default["faults"] > 0.9 * pages  # glibc unmapped the buffer on free: every page faults again
    assert retained["applied"] and retained["again"]  # applied, and a second call is a no-op that says so
    assert retained["faults"] < 0.05 * pages  # the heap kept it: no page is faulted in again
