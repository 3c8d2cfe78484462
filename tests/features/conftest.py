"""Fixtures shared by the feature tests."""

from __future__ import annotations

import pytest
import torch

from rvc_peft.features.rmvpe import E2E


@pytest.fixture(scope="session")
def saved_rmvpe(tmp_path_factory):
    """A full-size random RMVPE with non-trivial BatchNorm statistics, saved as a plain state dict in the key layout
    of RVC's rmvpe.pt (no real weights can be downloaded here). Session-wide: the file is 362 MB."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1)
    try:
        model = E2E().eval()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(1234)
    finally:
        torch.random.set_rng_state(generator_state)
    path = tmp_path_factory.mktemp("rmvpe") / "rmvpe.pt"
    torch.save(model.state_dict(), path)
    return model, path
