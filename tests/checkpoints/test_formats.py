"""Every RVC file format written, read back and run: same audio, zero missing or unexpected keys."""

import os
import stat
from collections import OrderedDict
from contextlib import contextmanager
from unittest import mock

import pytest
import torch

import rvc_peft
from rvc_peft.checkpoints import atomic_write, read_checkpoint, rvc_state_dict
from rvc_peft.models import RVCSynthesizer, fold_weight_norm, to_parametrized_keys
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

    with mock.patch("torch.save", failing_save), \
            pytest.raises(OSError, match="no space left on device while writing"):
        rvc_peft.export_rvc(model, path)
    assert path.read_bytes() == b"previous voice"
    assert os.listdir(tmp_path) == ["voice.pth"]


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_written_files_get_the_mode_open_would_give(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000))
    for mask in (0o022, 0o077, 0o002):
        with umask(mask):
            voice = rvc_peft.export_rvc(model, tmp_path / f"voice_{mask:o}.pth")
            atomic_write(tmp_path / f"notes_{mask:o}.txt", lambda p: p.write_text("x"))
        for path in (voice, tmp_path / f"notes_{mask:o}.txt"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask, path
    # Replacing a file keeps its mode, whatever the umask.
    shared = tmp_path / "shared.pth"
    shared.write_bytes(b"old voice")
    os.chmod(shared, 0o640)
    with umask(0o077):
        rvc_peft.export_rvc(model, shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o640
    assert rvc_peft.load_synthesizer(shared).config.sampling_rate == 40000
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"voice_{m:o}.pth" for m in (0o022, 0o077, 0o002)] + [f"notes_{m:o}.txt" for m in (0o022, 0o077, 0o002)]
        + ["shared.pth"]
    )  # no temporary files left behind


def test_applio_speakers_id_is_a_count_that_offers_the_voice_row(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000, spk_embed_dim=4))
    default = torch.load(rvc_peft.export_rvc(model, tmp_path / "a.pth", flavor="applio"), weights_only=True)
    assert default["speakers_id"] == 1  # what Applio itself writes for a one-speaker dataset
    assert rvc_peft.load_synthesizer(tmp_path / "a.pth").config.speaker_id == 0

    model.config.speaker_id = 2  # a voice fine-tuned as row 2 of the speaker table
    path = rvc_peft.export_rvc(model, tmp_path / "b.pth", flavor="applio")
    speakers = torch.load(path, weights_only=True)["speakers_id"]
    assert speakers == 3 and 2 in range(speakers)  # Applio's UI offers rows range(speakers_id)
    assert rvc_peft.load_synthesizer(path).config.speaker_id == 2
    explicit = rvc_peft.export_rvc(model, tmp_path / "c.pth", flavor="applio", speaker_id=1)
    assert torch.load(explicit, weights_only=True)["speakers_id"] == 2
    with pytest.raises(ValueError, match=r"speaker_id 4 is not a row of this model's speaker table \(0\.\.3\)"):
        rvc_peft.export_rvc(model, tmp_path / "d.pth", flavor="applio", speaker_id=4)
    assert not (tmp_path / "d.pth").exists()


def test_applio_export_with_parametrized_names_and_empty_metadata(tmp_path) -> None:
    """Applio's extract_model as it writes with architecture != RVC: parametrized names, None for unknown fields."""
    model = random_synthesizer(small_config("v2", True, 40000))
    ckpt = torch.load(rvc_peft.export_rvc(model, tmp_path / "voice.pth"), weights_only=True)
    applio = OrderedDict(
        weight=to_parametrized_keys(ckpt["weight"]), config=ckpt["config"], epoch=5, step=100, sr=40000, f0=True,
        version="v2", creation_date="2026-01-01T00:00:00", model_hash="h", overtrain_info=None, dataset_length=None,
        model_name="n", author=None, embedder_model=None, speakers_id=1, vocoder="HiFi-GAN",
    )
    assert any(".parametrizations.weight.original1" in k for k in applio["weight"])
    torch.save(applio, tmp_path / "applio.pth")
    checkpoint = read_checkpoint(tmp_path / "applio.pth")
    assert checkpoint.kind == "applio" and checkpoint.metadata["author"] is None
    loaded = rvc_peft.load_synthesizer(tmp_path / "applio.pth")
    assert loaded.config.content_encoder == "contentvec" and loaded.config.speaker_id == 0
    x = random_inputs(model.config)
    torch.testing.assert_close(run(loaded, x), run(half_rounded(model), x), atol=1e-5, rtol=0)


def test_training_checkpoint_with_adamw_state(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.8, 0.99), eps=1e-9)  # RVC's settings
    x = random_inputs(model.config, frames=40)
    spec = torch.rand(1, model.config.spec_channels, 40)
    audio, *_, stats = model(x["phone"], x["phone_lengths"], x["pitch"], x["nsff0"], spec, torch.tensor([40]),
                              x["sid"])
    (audio.abs().mean() + sum(s.mean() for s in stats)).backward()  # every parameter gets a gradient
    optimizer.step()
    model.eval()
    path = rvc_peft.save_rvc_checkpoint(model, tmp_path / "G_10.pth", kind="training", optimizer=optimizer,
                                        iteration=3)
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == "training" and checkpoint.metadata == {"iteration": 3, "learning_rate": 1e-4}
    loaded = rvc_peft.load_synthesizer(path)
    torch.testing.assert_close(run(loaded, x), run(model, x), atol=0, rtol=0)
    # RVC resumes with optimizer.load_state_dict(ckpt["optimizer"]): the moments come back exactly.
    saved = torch.load(path, weights_only=True)["optimizer"]
    fresh = torch.optim.AdamW(loaded.parameters(), lr=1e-4, betas=(0.8, 0.99), eps=1e-9)
    fresh.load_state_dict(saved)
    original = optimizer.state_dict()["state"]
    assert len(original) == len(list(model.parameters())) and set(saved["state"]) == set(original)
    for index, state in original.items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state_dict()["state"][index][name], state[name])


@pytest.mark.parametrize("kind", ["training", "hf", "exported"])
def test_keep_posterior_encoder_false(tmp_path, kind: str) -> None:
    model = random_synthesizer(small_config("v1", True, 48000))
    if kind == "training":
        source = rvc_peft.save_rvc_checkpoint(model, tmp_path / "G_1.pth", kind="training")
    elif kind == "hf":
        model.save_pretrained(tmp_path / "hf")
        source = tmp_path / "hf"
    else:
        source = rvc_peft.export_rvc(model, tmp_path / "voice.pth")
    loaded = rvc_peft.load_synthesizer(source, keep_posterior_encoder=False)
    assert not hasattr(loaded, "enc_q") and not loaded.config.use_posterior_encoder
    assert not any(k.startswith("enc_q.") for k in loaded.state_dict())
    with pytest.raises(ValueError, match="no posterior encoder"):
        loaded(torch.zeros(1, 4, 256), torch.tensor([4]))
    x = random_inputs(model.config)
    expected = run(half_rounded(model) if kind == "exported" else model, x)
    torch.testing.assert_close(run(loaded, x), expected, atol=1e-5, rtol=0)
    full = rvc_peft.load_synthesizer(source)
    assert hasattr(full, "enc_q") == (kind != "exported")


def test_info_string_round_trips(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", False, 32000))
    path = rvc_peft.export_rvc(model, tmp_path / "voice.pth", info="300epoch")
    loaded = rvc_peft.load_synthesizer(path)
    assert loaded.config.rvc_info == "300epoch"
    again = torch.load(rvc_peft.export_rvc(loaded, tmp_path / "again.pth"), weights_only=True)
    assert again["info"] == "300epoch"
    loaded.save_pretrained(tmp_path / "hf")  # the info travels in config.json
    via_hub_layout = rvc_peft.load_synthesizer(tmp_path / "hf")
    assert torch.load(rvc_peft.export_rvc(via_hub_layout, tmp_path / "hf.pth"), weights_only=True)["info"] == "300epoch"
    renamed = rvc_peft.export_rvc(loaded, tmp_path / "new.pth", info="merged with LoRA")
    assert torch.load(renamed, weights_only=True)["info"] == "merged with LoRA"
    assert torch.load(rvc_peft.export_rvc(model, tmp_path / "fresh.pth"), weights_only=True)["info"] == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_from_cuda_writes_cpu_tensors(tmp_path) -> None:
    model = random_synthesizer(small_config("v2", True, 40000)).cuda()
    optimizer = torch.optim.AdamW(model.parameters())
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    files = [
        rvc_peft.export_rvc(model, tmp_path / "voice.pth"),
        rvc_peft.export_rvc(model, tmp_path / "applio.pth", flavor="applio"),
        rvc_peft.save_rvc_checkpoint(model, tmp_path / "f0G40k.pth"),
        rvc_peft.save_rvc_checkpoint(model, tmp_path / "G_1.pth", kind="training", optimizer=optimizer),
    ]
    for path in files:
        found = []
        _collect_tensors(torch.load(path, weights_only=True), found)  # no map_location: devices as written
        assert found and all(t.device.type == "cpu" for t in found), path
    x = {k: v.cuda() for k, v in random_inputs(model.config).items()}
    loaded = rvc_peft.load_synthesizer(files[1], device="cuda")
    torch.testing.assert_close(run(loaded, x), run(half_rounded(model.cpu()).cuda(), x), atol=1e-4, rtol=0)


def _collect_tensors(value, found: list) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_tensors(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_tensors(item, found)
