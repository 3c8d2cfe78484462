"""Fixtures for the dataset tests: a tiny random HuBERT content encoder saved in transformers format."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A transformers-format ContentVec-like folder: real conv stack (kernels 10,3,3,3,3,2,2 / strides
    5,2,2,2,2,2,2, so 50 frames/s), 12 transformer layers of width 32, `final_proj` 32 -> 256 (v1 width)."""
    from transformers import HubertConfig, HubertModel

    from rvc_peft.features.content_encoder import ContentEncoder

    config = HubertConfig(
        hidden_size=32, num_hidden_layers=12, num_attention_heads=2, intermediate_size=64,
        conv_dim=(8,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, classifier_proj_size=256,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    try:
        encoder = ContentEncoder(HubertModel(config).eval(), torch.nn.Linear(32, 256), "v1", kind="contentvec",
                                 name_or_path="tiny-contentvec")
    finally:
        torch.random.set_rng_state(generator_state)
    folder = tmp_path_factory.mktemp("tiny_contentvec")
    encoder.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_dir):
    from rvc_peft.features.content_encoder import load_content_encoder

    return load_content_encoder(str(tiny_encoder_dir), "v1")
