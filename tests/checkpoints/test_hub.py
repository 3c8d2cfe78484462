"""Hub ids go through huggingface_hub's real download code (a pre-filled offline cache, or a local fake Hub)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

import rvc_peft
from rvc_peft.testing import random_inputs, random_synthesizer, small_config
from tests.fakehub import hub_env, serve_fake_hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROUND_TRIP = Path(__file__).with_name("hub_roundtrip.py")
ROOT = Path(__file__).resolve().parents[2]


def _cache_repo(cache, repo_id: str, files: dict) -> None:
    """Lay files out the way huggingface_hub stores a downloaded snapshot."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    for name, source in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, snapshot / name)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_rvc_file_from_hub_id(tmp_path, hub_cache) -> None:
    model = random_synthesizer(small_config("v2", True, 40000))
    base = rvc_peft.save_rvc_checkpoint(model, tmp_path / "f0G40k.pth")
    _cache_repo(hub_cache, "lj1995/VoiceConversionWebUI", {"pretrained_v2/f0G40k.pth": base})
    x = random_inputs(model.config)
    for ref, kwargs in [
        ("lj1995/VoiceConversionWebUI", {"filename": "pretrained_v2/f0G40k.pth"}),
        ("lj1995/VoiceConversionWebUI/pretrained_v2/f0G40k.pth", {}),
        ("hf://lj1995/VoiceConversionWebUI/pretrained_v2/f0G40k.pth", {}),
    ]:
        loaded = rvc_peft.load_synthesizer(ref, **kwargs)
        assert loaded.name_or_path.endswith("pretrained_v2/f0G40k.pth")
        assert loaded.config.use_posterior_encoder
        torch.manual_seed(0)
        a = loaded.infer(**x)[0]
        torch.manual_seed(0)
        b = model.infer(**x)[0]
        assert (a - b).abs().max() < 1e-3  # fp16 base file


def test_hf_layout_from_hub_id_and_auto_classes(tmp_path, hub_cache) -> None:
    model = random_synthesizer(small_config("v1", False, 48000))
    model.save_pretrained(tmp_path / "hf")
    _cache_repo(hub_cache, "someone/voice-base", {p.name: p for p in (tmp_path / "hf").iterdir()})
    loaded = rvc_peft.load_synthesizer("someone/voice-base")
    assert loaded.config.version == "v1" and loaded.name_or_path == "someone/voice-base"
    x = random_inputs(model.config)
    torch.manual_seed(0)
    a = loaded.infer(**x)[0]
    torch.manual_seed(0)
    b = model.infer(**x)[0]
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert AutoConfig.from_pretrained(tmp_path / "hf").model_type == "rvc"
    auto = AutoModel.from_pretrained(tmp_path / "hf")
    assert isinstance(auto, rvc_peft.RVCSynthesizer)


def test_push_to_hub_and_load_by_hub_id(tmp_path) -> None:
    """`RVCSynthesizer.push_to_hub` then `load_synthesizer("org/name")` through huggingface_hub's real HTTP code."""
    with serve_fake_hub() as hub:
        # Files that share the repo but are not the base: the snapshot must not fetch them.
        hub.commit("org/rvc-base", {"README.md": b"# a voice", "adapter_model.safetensors": b"not ours",
                                    "voice.pth": b"an exported voice", "added_IVF1_Flat.index": b"an index"})
        env = hub_env(hub.endpoint, tmp_path / "cache", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        result = subprocess.run([sys.executable, str(ROUND_TRIP), str(tmp_path), "org/rvc-base"], env=env,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-4000:]
        pushed = hub.files("org/rvc-base")
    assert {"config.json", "model.safetensors"} <= set(pushed)
    assert json.loads(pushed["config.json"])["model_type"] == "rvc"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["max_abs_diff"] == 0.0
    assert results["config"] == ["v1", True, 48000, 3, 2, True]
    assert results["name_or_path"] == "org/rvc-base"
    assert results["snapshot_files"] == ["config.json", "model.safetensors"]
