"""Tuner tests run single-threaded: their models are tiny, and on a busy 2-core machine OpenMP thread hand-offs make
each small op (e.g. a weight-norm evaluation) ~1000× slower than running it on one thread."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
