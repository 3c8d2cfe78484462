"""Files as RVC writes them load here; files we export load in RVC's own code the way RVC WebUI loads them."""

from collections import OrderedDict
from unittest import mock

import pytest
import torch

import rvc_peft
from rvc_peft.models import fold_weight_norm
from rvc_peft.testing import random_inputs, random_synthesizer, small_config

from ..models.test_parity_with_rvc import RVC_CLASSES, rvc_infer, rvc_reference

rvc_models = pytest.importorskip("rvc.lib.infer_pack.models", reason="RVC reference code (pip install --no-deps rvc)")

# Every RVC class at every sample rate (small channel counts keep each case well under a second of model time).
CASES = [(version, sr, f0) for version in ("v1", "v2") for sr in (32000, 40000, 48000) for f0 in (True, False)]


def no_noise():
    return mock.patch("torch.randn_like", lambda t, *a, **k: torch.zeros_like(t))


def webui_load(path) -> torch.nn.Module:
    """RVC WebUI's `VC.get_vc` steps (rvc-reference §3.4) with RVC's own classes."""
    cpt = torch.load(path, map_location="cpu", weights_only=True)
    cpt["config"][-3] = cpt["weight"]["emb_g.weight"].shape[0]
    cls = getattr(rvc_models, RVC_CLASSES[(cpt.get("version", "v1"), bool(cpt.get("f0", 1)))])
    net = cls(*cpt["config"], is_half=False)
    del net.enc_q
    result = net.load_state_dict(cpt["weight"], strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    return net.eval().float()


@pytest.mark.parametrize("version,sr,f0", CASES)
def test_files_written_like_rvc_load_here(tmp_path, version: str, sr: int, f0: bool) -> None:
    config = small_config(version, f0, sr)
    reference = rvc_reference(config)
    state = reference.state_dict()
    sr_name = f"{sr // 1000}k"
    torch.save({"model": OrderedDict((k, v.half()) for k, v in state.items())}, tmp_path / "base.pth")
    exported = OrderedDict(
        weight=OrderedDict((k, v.half()) for k, v in state.items() if "enc_q" not in k),
        config=config.to_rvc_list(), info="20epoch", sr=sr_name, f0=int(f0), version=version,
    )
    torch.save(exported, tmp_path / "voice.pth")
    reference.load_state_dict({k: v.half().float() for k, v in state.items()})  # what the fp16 files hold
    x = random_inputs(config, frames=30)
    with torch.no_grad(), no_noise():
        expected = rvc_infer(reference, config, x)[0]
        for name in ("base.pth", "voice.pth"):
            ours = rvc_peft.load_synthesizer(tmp_path / name)
            torch.testing.assert_close(ours.infer(**x)[0], expected, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("version,sr,f0", CASES)
def test_our_exports_load_in_rvc(tmp_path, version: str, sr: int, f0: bool) -> None:
    model = random_synthesizer(small_config(version, f0, sr))
    x = random_inputs(model.config, frames=30)
    path = rvc_peft.export_rvc(model, tmp_path / "voice.pth")
    ours = rvc_peft.load_synthesizer(path)
    with torch.no_grad(), no_noise():
        torch.testing.assert_close(rvc_infer(webui_load(path), model.config, x)[0], ours.infer(**x)[0], atol=1e-5,
                                   rtol=0)
        fold_weight_norm(model)  # a folded (weight-norm-free) model exports to the same layout
        folded = rvc_peft.export_rvc(model, tmp_path / "folded.pth")
        torch.testing.assert_close(rvc_infer(webui_load(folded), model.config, x)[0], ours.infer(**x)[0], atol=1e-4,
                                   rtol=0)
