"""Hub ids go through huggingface_hub's real download code (served here from a pre-filled offline cache)."""

import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModel

import rvc_peft
from rvc_peft.testing import random_inputs, random_synthesizer, small_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


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
