"""One run at the real size: the v2 40k pitch synthesizer (36.5 M parameters) with the default voice adapter."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from safetensors import safe_open

import rvc_peft.tuners  # noqa: F401
from rvc_peft.checkpoints import export_rvc, load_synthesizer
from rvc_peft.models import RVCConfig
from rvc_peft.testing import random_inputs, random_synthesizer
from rvc_peft.tuners import RVCLoraConfig, read_adapter_info
from tests.tuners.toy_models import randomize_lora


def _run(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    torch.manual_seed(11)
    with torch.no_grad():
        return model.infer(**inputs)[0]


@pytest.mark.slow  # ~10 s: builds, runs and exports the real-size model
def test_full_v2_40k_adapter_merge_save_export(tmp_path) -> None:
    config = RVCConfig.from_preset("40k", "v2", use_f0=True)
    base = random_synthesizer(config)
    total = sum(p.numel() for p in base.parameters())
    assert total == 36_458_818  # rvc-reference §1.5: 768 f0 class with enc_q
    inputs = random_inputs(config, frames=16)
    reference = _run(base, inputs)

    model = get_peft_model(base, RVCLoraConfig())  # generator preset, r=8, alpha=16
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert 0.005 < trainable / total < 0.05
    randomize_lora(model, scale=0.01)
    adapted = _run(model, inputs)
    assert (adapted - reference).abs().max() > 1e-3
    model.merge_adapter()
    merged = _run(model, inputs)
    model.unmerge_adapter()
    restored = _run(model, inputs)
    assert (merged - adapted).abs().max() <= 1e-5
    assert (restored - adapted).abs().max() <= 1e-5

    model.save_pretrained(tmp_path / "adapter")
    adapter_file = tmp_path / "adapter" / "adapter_model.safetensors"
    with safe_open(str(adapter_file), "pt") as handle:
        saved = sum(handle.get_tensor(k).numel() for k in handle.keys())  # noqa: SIM118 - not iterable
    assert saved == trainable
    assert trainable * 4 <= adapter_file.stat().st_size <= trainable * 4 + 60_000  # fp32 values + JSON header
    assert read_adapter_info(tmp_path / "adapter")["adapter"]["num_parameters"] == trainable

    voice = export_rvc(model.merge_and_unload(), tmp_path / "voice.pth", info="full-size test")
    assert 50e6 < voice.stat().st_size < 60e6  # ~27.5 M fp16 values (rvc-reference: 55.2 MB)
    assert adapter_file.stat().st_size / voice.stat().st_size < 0.1
    loaded = load_synthesizer(voice)
    assert loaded.config.version == "v2" and loaded.config.sampling_rate == 40000 and not hasattr(loaded, "enc_q")
    assert (_run(loaded, inputs) - adapted).abs().max() <= 2e-3  # fp16 storage of the merged weights
