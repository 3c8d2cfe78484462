"""Every RVC file format written, read back and run: same audio, zero missing or unexpected keys."""

import os
from contextlib import contextmanager
from unittest import mock

import pytest
import torch

import rvc_peft
from rvc_peft.checkpoints import read_checkpoint, rvc_state_dict
from rvc_peft.models import RVCSynthesizer, fold_weight_norm
from rvc_peft.testing import random_inputs, random_synthesizer, small_config

PRESETS = [("v1", 32000), ("v1", 40000), ("v1", 48000), ("v2", 32000), ("v2", 40000), ("v2", 48000)]


@contextmanager
def no_noise():
    with mock.patch("torch.randn_like", lambda t, *a, **k: torch.zeros_like(t)):
        yield


def half_rounded(model: RVCSynthesizer) -> RVCSynthesizer:
    """The same model with every weight rounded through fp16, as RVC's fp16 files store it."""
    copy = RVCSynthesizer(model.config).eval()
    copy.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return copy


def run(model: RVCSynthesizer, x: dict) -> torch.Tensor:
    with torch.no_grad(), no_noise():
        return model.infer(**x)[0]


@pytest.mark.parametrize("version,sr", PRESETS)
@pytest.mark.parametrize("f0", [True, False])
def test_every_format_round_trips(tmp_path, version: str, sr: int, f0: bool) -> None:
    model = random_synthesizer(small_config(version, f0, sr))
    x = random_inputs(model.config, frames=24)
    exact, rounded = run(model, x), run(half_rounded(model), x)

    files = {
        "base": rvc_peft.save_rvc_checkpoint(model, tmp_path / "f0G.pth"),
        "training": rvc_peft.save_rvc_checkpoint(model, tmp_path / "G_2333333.pth", kind="training", iteration=7),
        "exported": rvc_peft.export_rvc(model, tmp_path / "voice.pth", info="20epoch"),
        "applio": rvc_peft.export_rvc(model, tmp_path / "voice_applio.pth", flavor="applio"),
    }
    model.save_pretrained(tmp_path / "hf")
    files["hf"] = tmp_path / "hf"
    for kind, path in files.items():
        loaded = rvc_peft.load_synthesizer(path)
        assert not loaded.training
        assert (loaded.config.version, loaded.config.use_f0, loaded.config.sampling_rate) == (version, f0, sr)
        assert loaded.config.use_posterior_encoder == (kind in ("base", "training", "hf"))
        expected = exact if kind in ("training", "hf") else rounded
        torch.testing.assert_close(run(loaded, x), expected, atol=1e-5, rtol=0, msg=kind)
        if kind != "hf":
            assert read_checkpoint(path).kind == kind


def test_exported_file_layout(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 48000))
    path = rvc_peft.export_rvc(model, tmp_path / "voice.pth", info="Extracted model.")
    ckpt = torch.load(path, weights_only=True)
    assert list(ckpt) == ["weight", "config", "info", "sr", "f0", "version"]
    assert (ckpt["info"], ckpt["sr"], ckpt["f0"], ckpt["version"]) == ("Extracted model.", "48k", 1, "v2")
    assert ckpt["config"][1] == 32 and ckpt["config"][17] == 48000 and len(ckpt["config"]) == 18
    assert all(t.dtype == torch.float16 for t in ckpt["weight"].values())
    assert not any("enc_q" in k or "parametrizations" in k for k in ckpt["weight"])
    assert "dec.ups.0.weight_g" in ckpt["weight"] and "dec.ups.0.weight_v" in ckpt["weight"]
    applio = torch.load(rvc_peft.export_rvc(model, tmp_path / "a.pth", flavor="applio"), weights_only=True)
    assert applio["sr"] == 48000 and applio["f0"] is True and applio["vocoder"] == "HiFi-GAN" and "info" not in applio


def test_folded_model_exports_to_weight_norm_layout(tmp_path) -> None:
    model = random_synthesizer(small_config("v1", True, 40000))
    x = random_inputs(model.config)
    before = run(model, x)
    fold_weight_norm(model)
    state = rvc_state_dict(model, include_posterior_encoder=False)
    assert "dec.resblocks.0.convs1.0.weight_g" in state and "dec.resblocks.0.convs1.0.weight" not in state
    g, v = state["dec.ups.0.weight_g"], state["dec.ups.0.weight_v"]
    assert g.shape == (32, 1, 1) and v.shape == (32, 16, 16)  # ConvTranspose1d: norm over the input axis
    reloaded = rvc_peft.load_synthesizer(rvc_peft.export_rvc(model, tmp_path / "folded.pth"))
    torch.testing.assert_close(run(reloaded, x), run(half_rounded(random_synthesizer(model.config)), x), atol=1e-5,
                               rtol=0)
    assert torch.allclose(before, run(model, x), atol=1e-6)


def test_speaker_count_comes_from_the_table(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000, spk_embed_dim=3))
    path = rvc_peft.export_rvc(model, tmp_path / "merged.pth")
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"][15] = 109  # what RVC's merge tool leaves behind
    torch.save(ckpt, path)
    assert rvc_peft.load_synthesizer(path).config.spk_embed_dim == 3


def test_old_v1_file_without_version_and_applio_variants(tmp_path) -> None:
    model = random_synthesizer(small_config("v1", True, 40000))
    path = rvc_peft.export_rvc(model, tmp_path / "old.pth")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["version"]
    ckpt["sr"] = 40000
    ckpt["f0"] = True
    torch.save(ckpt, path)
    loaded = rvc_peft.load_synthesizer(path)
    assert (loaded.config.version, loaded.config.use_f0) == ("v1", True)


def test_parametrized_spelling_and_ddp_prefix(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", False, 32000))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # parametrizations.weight.original0/1
    assert any(".parametrizations.weight.original0" in k for k in state)
    torch.save({"model": state, "iteration": 3, "optimizer": {}, "learning_rate": 1e-4}, tmp_path / "G_3.pth")
    loaded = rvc_peft.load_synthesizer(tmp_path / "G_3.pth")
    x = random_inputs(model.config)
    torch.testing.assert_close(run(loaded, x), run(model, x), atol=0, rtol=0)


def test_ambiguous_rate_needs_sample_rate(tmp_path) -> None:
    model = random_synthesizer(small_config("v1", False, 48000))
    state = {k: v for k, v in rvc_state_dict(model).items() if not k.startswith("enc_q.")}
    torch.save({"model": state}, tmp_path / "G48.pth")
    with pytest.raises(rvc_peft.CheckpointError, match=r"G48.pth: the weights fit 32k or 48k; pass sample_rate="):
        rvc_peft.load_synthesizer(tmp_path / "G48.pth")
    loaded = rvc_peft.load_synthesizer(tmp_path / "G48.pth", sample_rate="48k")
    assert loaded.config.upsample_rates == [10, 6, 2, 2, 2]
    with pytest.raises(rvc_peft.CheckpointError, match="sample_rate=40k was requested but the shapes fit 32k or 48k"):
        rvc_peft.load_synthesizer(tmp_path / "G48.pth", sample_rate="40k")


def test_pitch_rate_told_apart_by_noise_convs(tmp_path) -> None:
    for sr in (32000, 48000):
        model = random_synthesizer(small_config("v1", True, sr))
        state = {k: v for k, v in rvc_state_dict(model).items() if not k.startswith("enc_q.")}
        torch.save({"model": state}, tmp_path / "G.pth")
        assert rvc_peft.load_synthesizer(tmp_path / "G.pth").config.sampling_rate == sr


def test_discriminator_files(tmp_path) -> None:
    for version in ("v1", "v2"):
        disc = rvc_peft.MultiPeriodDiscriminator(version)
        path = rvc_peft.save_rvc_checkpoint(disc, tmp_path / f"D_{version}.pth", kind="training")
        loaded = rvc_peft.load_discriminator(path)
        assert loaded.version == version
        for a, b in zip(loaded.state_dict().values(), disc.state_dict().values()):
            assert torch.equal(a, b)


def test_atomic_export_keeps_existing_file(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000))
    path = tmp_path / "voice.pth"
    path.write_bytes(b"previous voice")

    def failing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    with mock.patch("torch.save", failing_save), pytest.raises(OSError, match="No space left"):
        rvc_peft.export_rvc(model, path)
    assert path.read_bytes() == b"previous voice"
    assert os.listdir(tmp_path) == ["voice.pth"]
