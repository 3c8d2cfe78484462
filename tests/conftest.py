"""Shared test settings: never touch the network, keep runs deterministic and single-threaded enough for 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# Tiny test models run far faster on one thread than on two contended ones.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_rvc_peft_logger():
    """The CLI and training runs configure the "rvc_peft" logger (own handler, no propagation): give the next test
    the logger as it was, so that pytest's log capture (caplog, on the root logger) keeps seeing our lines."""
    import logging

    logger = logging.getLogger("rvc_peft")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = state[0]
    logger.setLevel(state[1])
    logger.propagate = state[2]
