"""Fixtures for the dataset tests: a tiny random HuBERT content encoder saved in transformers format."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A transformers-format ContentVec-like folder: real conv stack (kernels 10,3,3,3,3,2,2 / strides
    5,2,2,2,2,2,2, so 50 frames/s), 12 transformer layers of width 32, `final_proj` 32 -> 256 (v1 width)."""
    from rvc_peft.testing import tiny_content_encoder

    encoder = tiny_content_encoder(seed=1234, conv_channels=8)
    folder = tmp_path_factory.mktemp("tiny_contentvec")
    encoder.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_dir):
    from rvc_peft.features.content_encoder import load_content_encoder

    return load_content_encoder(str(tiny_encoder_dir), "v1")
