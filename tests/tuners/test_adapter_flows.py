"""Every way of saving and loading an RVC adapter, with loading always in a fresh process.

The test process makes and saves the adapters; a fresh subprocess pushes one to a local fake Hub through HF_ENDPOINT
and loads them all back through each path, the hub id included (see adapter_flows.py). Both run once per module;
each test checks one flow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from tests.fakehub import hub_env, serve_fake_hub
from tests.tuners import adapter_flows

SCRIPT = Path(__file__).with_name("adapter_flows.py")
ROOT = Path(__file__).resolve().parents[2]
EXACT = 1e-6  # loads must reproduce the outputs (observed: 0 to 2e-8, memory-layout rounding in transformers' path)


def _run(mode: str, folder: Path, env: dict[str, str], *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(folder), *extra], env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, f"{mode} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("adapter_flows")
    with serve_fake_hub(folder / "hub_mirror") as hub:
        env = hub_env(hub.endpoint, folder / "hf_cache", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        adapter_flows.make(folder)
        _run("check", folder, env, "--hub")
        pushed_files = sorted(hub.files("org/voice"))
        readme = hub.files("org/voice").get("README.md", b"").decode()
    results = json.loads((folder / "results.json").read_text())
    return {"folder": folder, "results": results, "pushed_files": pushed_files, "pushed_readme": readme,
            "made": json.loads((folder / "made.json").read_text())}


def _ok(value: Any) -> Any:
    assert not (isinstance(value, str) and value.startswith("ERROR")), value
    return value


def test_save_writes_standard_lora_files(flows: dict[str, Any]) -> None:
    folder = flows["folder"] / "voice_a"
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "README.md",
                                                  "rvc_adapter.json"}
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == "f0G40k.pth"  # the file name, not the private path
    assert config["auto_mapping"]["rvc"]["sampling_rate"] == 40000


def test_adapter_file_size_matches_parameter_count(flows: dict[str, Any]) -> None:
    path = flows["folder"] / "voice_a" / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        count = sum(_prod(handle.get_slice(k).get_shape()) for k in keys)
        dtypes = {handle.get_slice(k).get_dtype() for k in keys}
    assert count == flows["made"]["sizes"]["voice_a"]
    assert dtypes == {"F32"}
    header = 8 + 200 * len(keys)  # safetensors JSON header: about 100-200 bytes per tensor
    assert count * 4 <= path.stat().st_size <= count * 4 + header
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in keys)
    assert any(k.startswith("base_model.model.dec.ups.") for k in keys)  # ConvTranspose1d adapted
    assert any(".resblocks." in k and ".convs1." in k for k in keys)  # dilated Conv1d adapted


def _prod(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def test_peft_model_from_pretrained_and_adapter_switching(flows: dict[str, Any]) -> None:
    report = _ok(flows["results"]["from_dir"])
    assert report["ups_layer"] == "LoraConvTranspose1d"
    for key in ("diff", "after_load_adapter_still_a", "set_adapter_b", "disable_adapter", "after_delete"):
        assert report[key] <= EXACT, key
    assert report["adapters_left"] == ["default"]


def test_hotswap_adapter(flows: dict[str, Any]) -> None:
    assert _ok(flows["results"]["from_dir"])["hotswap_to_b"] <= EXACT


def test_merge_and_unload_after_reload(flows: dict[str, Any]) -> None:
    report = _ok(flows["results"]["merged"])
    assert report["diff"] <= 1e-5
    assert report["merged_type"] == "RVCSynthesizer"
    assert report["weight_norm_kept"] is True


def test_trainable_low_memory_reload(flows: dict[str, Any]) -> None:
    report = _ok(flows["results"]["trainable_reload"])
    assert report["diff"] <= EXACT
    assert report["meta"] == []
    assert report["all_trainable_are_lora"] is True


def test_adapter_trained_after_weight_norm_removal_loads_on_unfolded_base(flows: dict[str, Any]) -> None:
    assert _ok(flows["results"]["folded_adapter_on_unfolded_base"]) <= EXACT


def test_transformers_adapter_api(flows: dict[str, Any]) -> None:
    report = _ok(flows["results"]["transformers_api"])
    for key in ("load_adapter", "set_adapter_a", "disable_adapters", "after_delete", "peft_from_tf_folder"):
        assert report[key] <= EXACT, key


def test_wrong_base_version_is_named(flows: dict[str, Any]) -> None:
    message = flows["results"]["wrong_version"]
    assert message.startswith("IncompatibleAdapterError: adapter 'default' was made for an RVC v2 40k with pitch "
                              "(base 'f0G40k.pth', sha256:"), message
    assert "loaded onto is an RVC v1 40k with pitch (base 'f0G40k_v1.pth'" in message
    assert "version 'v2' vs 'v1'" in message


def test_wrong_base_sample_rate_is_named(flows: dict[str, Any]) -> None:
    message = flows["results"]["wrong_rate"]
    assert "RVC v2 40k with pitch (base 'f0G40k.pth'" in message and "RVC v2 48k with pitch (base 'f0G48k.pth'" in message
    assert "sampling_rate 40000 vs 48000" in message


def test_same_architecture_other_weights_warns(flows: dict[str, Any]) -> None:
    warnings = _ok(flows["results"]["other_weights"])["warnings"]
    assert len(warnings) == 1 and "this base ('other_f0G40k.pth') has the same architecture but different weights" in warnings[0]


def test_fingerprint_is_stable_across_processes(flows: dict[str, Any]) -> None:
    saved = json.loads((flows["folder"] / "voice_a" / "rvc_adapter.json").read_text())
    assert saved["base_model"]["fingerprint"] == flows["results"]["fingerprint_of_base"]


def test_cli_export_writes_a_normal_rvc_voice(flows: dict[str, Any]) -> None:
    report = _ok(flows["results"]["export_cli"])
    assert report["status"] == 0
    assert report["keys"] == ["config", "f0", "info", "sr", "version", "weight"]
    assert (report["info"], report["sr"], report["f0"], report["version"]) == ("voice a", "40k", 1, "v2")
    assert report["dtypes"] == ["torch.float16"] and report["has_weight_g"] and not report["has_enc_q"]
    assert report["file_kind"] == "exported"
    assert report["diff_to_fp16_merged"] <= EXACT  # the file holds exactly the fp16-rounded merged weights
    assert report["diff_to_adapter"] <= 1e-3  # fp16 storage vs the fp32 adapter


def test_push_to_fake_hub_and_load_by_hub_id(flows: dict[str, Any]) -> None:
    assert flows["pushed_files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors", "rvc_adapter.json"]
    assert _ok(flows["results"]["push"]).startswith("http://127.0.0.1:")  # the commit URL
    report = _ok(flows["results"]["from_hub"])
    assert report["diff"] <= EXACT
    assert report["training"]["steps"] == 1200
    readme = flows["pushed_readme"]
    assert readme.startswith("---\n") and "library_name: peft" in readme
    for tag in ("- rvc\n", "- voice-conversion\n", "- lora\n", "- rvc-v2\n", "- 40k\n"):
        assert tag in readme, tag
    assert "| LoRA rank / alpha | 4 / 8 |" in readme and "| steps | 1200 |" in readme
