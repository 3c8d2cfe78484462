"""Shared assets for the training tests: one tiny base file and datasets, built once per session."""

from pathlib import Path

import pytest
import torch

from rvc_peft.testing import small_config

from .utils import make_synthetic_dataset, save_base


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models gain nothing from threads, and a busy CI box oversubscribed with OpenMP threads slows 10-50x
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training-assets")
    config = small_config()
    return {
        "base": save_base(root / "f0G40k.pth", config),
        "data": make_synthetic_dataset(root / "data", config, n_rows=6, seconds=0.5),
        "config": config,
    }
