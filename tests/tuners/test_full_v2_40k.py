"""One run at the real size: the v2 40k pitch synthesizer (36.5 M parameters) with the default voice adapter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors import safe_open

import rvc_peft.tuners  # noqa: F401
from rvc_peft.checkpoints import export_rvc, load_synthesizer, save_rvc_checkpoint
from rvc_peft.models import RVCConfig
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora
from rvc_peft.tuners import RVCLoraConfig, read_adapter_info
from tests.tuners.adapter_flows import run

FLOWS_SCRIPT = Path(__file__).with_name("adapter_flows.py")
ROOT = Path(__file__).resolve().parents[2]


def _reload_in_fresh_process(base_file: Path, adapter: Path, inputs: dict, folder: Path) -> dict:
    """`PeftModel.from_pretrained(load_synthesizer(base_file), adapter)` in a new interpreter (adapter_flows.reload)."""
    torch.save(inputs, folder / "inputs.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(FLOWS_SCRIPT), "reload", str(base_file), str(adapter), str(folder / "inputs.pt"),
         str(folder / "reloaded.pt")], env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, f"reload failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return torch.load(folder / "reloaded.pt", weights_only=True)


@pytest.mark.slow  # ~25 s: builds, runs, reloads (in a fresh process) and exports the real-size model
def test_full_v2_40k_adapter_merge_save_export(tmp_path) -> None:
    config = RVCConfig.from_preset("40k", "v2", use_f0=True)
    # the base as a user has it: an RVC base file (fp16, like pretrained_v2/f0G40k.pth), read back the same way here
    # and in the fresh process, so both hold exactly the same base weights
    base_file = save_rvc_checkpoint(random_synthesizer(config), tmp_path / "f0G40k.pth", kind="base")
    base = load_synthesizer(base_file)
    total = sum(p.numel() for p in base.parameters())
    assert total == 36_458_818  # rvc-reference §1.5: 768 f0 class with enc_q
    inputs = random_inputs(config, frames=16)
    reference = run(base, inputs)

    model = get_peft_model(base, RVCLoraConfig())  # generator preset, r=8, alpha=16
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert 0.005 < trainable / total < 0.05
    randomize_lora(model, scale=0.01)
    adapted = run(model, inputs)
    assert (adapted - reference).abs().max() > 1e-3
    model.merge_adapter()
    merged = run(model, inputs)
    model.unmerge_adapter()
    restored = run(model, inputs)
    assert (merged - adapted).abs().max() <= 1e-5
    assert (restored - adapted).abs().max() <= 1e-5

    model.save_pretrained(tmp_path / "adapter")
    adapter_file = tmp_path / "adapter" / "adapter_model.safetensors"
    with safe_open(str(adapter_file), "pt") as handle:
        saved = sum(handle.get_tensor(k).numel() for k in handle.keys())  # noqa: SIM118 - not iterable
    assert saved == trainable
    assert trainable * 4 <= adapter_file.stat().st_size <= trainable * 4 + 60_000  # fp32 values + JSON header
    assert read_adapter_info(tmp_path / "adapter")["adapter"]["num_parameters"] == trainable

    reloaded = _reload_in_fresh_process(base_file, tmp_path / "adapter", inputs, tmp_path)
    assert reloaded["ups_layer"] == "LoraConvTranspose1d"
    assert (reloaded["audio"] - adapted).abs().max() <= 1e-5  # the in-memory model's output, before any merge

    voice = export_rvc(model.merge_and_unload(), tmp_path / "voice.pth", info="full-size test")
    assert 50e6 < voice.stat().st_size < 60e6  # ~27.5 M fp16 values (rvc-reference: 55.2 MB)
    assert adapter_file.stat().st_size / voice.stat().st_size < 0.1
    loaded = load_synthesizer(voice)
    assert loaded.config.version == "v2" and loaded.config.sampling_rate == 40000 and not hasattr(loaded, "enc_q")
    assert (run(loaded, inputs) - adapted).abs().max() <= 2e-3  # fp16 storage of the merged weights
