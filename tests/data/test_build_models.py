"""`rvc-peft preprocess` with every pitch method, and a work cache that follows the model weights it was made with.

F0 is checked against the synthetic clip's known pitch for the methods with real weights (harvest, dio and pm need
none; crepe-tiny and fcpe ship theirs in their wheels). rmvpe runs with random weights in RVC's key layout (no
rmvpe.pt can be downloaded here), so for it only the plumbing, shapes and coarse mapping are checked. crepe "full"
is left out: the same code path as crepe-tiny, about 35 s here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_peft.cli import main
from rvc_peft.data import DatasetBuildError, build_dataset, load_rvc_dataset
from rvc_peft.features.rmvpe import E2E
from rvc_peft.features.synthetic import voiced_signal

F0_HZ, SECONDS = 180.0, 1.5
SAMPLES_16K = int(SECONDS * 16000)


@pytest.fixture(scope="module")
def voiced_dir(tmp_path_factory):
    """A folder with one 1.5 s 180 Hz voiced WAV (16 kHz) and the clip's true F0 at 100 fps."""
    folder = tmp_path_factory.mktemp("voiced")
    audio, truth = voiced_signal(F0_HZ, SECONDS, 16000, seed=1)
    sf.write(folder / "a.wav", audio, 16000, subtype="FLOAT")
    return folder, truth


@pytest.fixture(scope="module")
def rmvpe_file(tmp_path_factory):
    """Random full-size RMVPE weights saved as a plain state dict in the key layout of RVC's rmvpe.pt."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(7)
    try:
        state = E2E().state_dict()
    finally:
        torch.random.set_rng_state(generator_state)
    path = tmp_path_factory.mktemp("rmvpe") / "rmvpe.pt"
    torch.save(state, path)
    return path


def _coarse(f0: np.ndarray) -> np.ndarray:
    """RVC's 1..255 pitch tokens, written out from its training code (not via rvc_peft)."""
    mel_min, mel_max = 1127 * np.log(1 + 50 / 700), 1127 * np.log(1 + 1100 / 700)
    mel = 1127 * np.log(1 + f0.astype(np.float64) / 700)
    mel[mel > 0] = (mel[mel > 0] - mel_min) * 254 / (mel_max - mel_min) + 1
    return np.rint(np.clip(mel, 1, 255)).astype(np.int64)


@pytest.mark.parametrize("method", ["rmvpe", "crepe-tiny", "fcpe", "harvest", "dio", "pm"])
def test_preprocess_with_every_pitch_method(method, voiced_dir, rmvpe_file, tiny_encoder_dir, tmp_path, capsys):
    audio_dir, truth = voiced_dir
    out_dir = tmp_path / "out"
    argv = ["preprocess", str(audio_dir), str(out_dir), "--sample-rate", "32k", "--version", "v1", "--f0-method",
            method, "--content-encoder", str(tiny_encoder_dir), "--rmvpe", str(rmvpe_file), "--no-progress"]
    assert main(argv) == 0
    assert "1 slices from 1 files (0 reused" in capsys.readouterr().out

    dataset, info = load_rvc_dataset(out_dir)
    assert (info.f0_method, info.use_f0, info.sample_rate, info.num_rows) == (method, True, 32000, 1)
    assert info.rmvpe == (str(rmvpe_file) if method == "rmvpe" else None)
    assert json.loads((out_dir / "rvc_dataset.json").read_text())["rmvpe"] == info.rmvpe
    assert set(dataset.column_names) == {"audio", "phone", "pitch", "pitchf", "speaker_id", "source_file", "offset",
                                         "slice_index"}
    row = dataset.with_format("numpy")[0]
    assert (row["source_file"], row["offset"], row["slice_index"], row["speaker_id"]) == ("a.wav", 0.0, 0, 0)
    assert row["audio"].shape == (int(SECONDS * 32000),) and row["audio"].dtype == np.float32
    assert row["phone"].shape == ((SAMPLES_16K - 400) // 320 + 1, 256)  # HuBERT's conv stack: 50 fps
    # RVC's training extraction: L // 160 + 1 frames, except pm, padded to L // 160
    frames = SAMPLES_16K // 160 + (0 if method == "pm" else 1)
    pitch, pitchf = row["pitch"], row["pitchf"]
    assert pitchf.shape == pitch.shape == (frames,)
    assert (pitchf.dtype, pitch.dtype) == (np.float32, np.int64)
    assert np.isfinite(pitchf).all() and (pitchf >= 0).all()
    np.testing.assert_array_equal(pitch, _coarse(pitchf))
    if method == "rmvpe":
        return  # random weights: no F0 is more plausible than another

    # Frames away from the clip ends (where every tracker's window is half empty) must be voiced and near the truth
    # (180 Hz with +-0.5 semitone vibrato; the 16 kHz -> 32 kHz -> 16 kHz round trip and high-pass shift nothing).
    stable = slice(6, len(truth) - 6)
    estimate, expected = pitchf[stable], truth[stable]
    assert np.mean(estimate > 0) >= 0.9, f"{method} left voiced frames unvoiced"
    voiced = estimate > 0
    cents = np.abs(1200 * np.log2(estimate[voiced] / expected[voiced]))
    assert np.median(cents) < 25 and np.mean(cents > 50) < 0.05, (method, np.median(cents))


def _build(audio_dir, out_dir, **kwargs):
    base = {"sample_rate": "32k", "version": "v1", "progress": False}
    return build_dataset(audio_dir, out_dir, **{**base, **kwargs})


def _row(out_dir):
    return load_rvc_dataset(out_dir)[0].with_format("numpy")[0]


def test_work_cache_follows_the_rmvpe_weights(voiced_dir, rmvpe_file, tiny_encoder, tmp_path, caplog):
    audio_dir, _ = voiced_dir
    out_dir, weights = tmp_path / "out", tmp_path / "weights" / "rmvpe.pt"
    weights.parent.mkdir()
    state = torch.load(rmvpe_file, weights_only=True)
    torch.save(state, weights)
    kwargs = {"f0_method": "rmvpe", "content_encoder": tiny_encoder, "rmvpe": str(weights)}

    info = _build(audio_dir, out_dir, **kwargs)
    assert info.stats == {"processed": 1, "reused": 0, "skipped": 0} and info.rmvpe == str(weights)
    first = _row(out_dir)
    settings = json.loads((out_dir / "work" / "settings.json").read_text())
    assert settings["rmvpe"] == str(weights)
    stat = weights.stat()
    assert settings["fingerprints"]["rmvpe"] == {
        "path": str(weights.resolve()), "files": {"rmvpe.pt": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}}}
    assert _build(audio_dir, out_dir, **kwargs).stats == {"processed": 0, "reused": 1, "skipped": 0}

    # Other weights in the same file (a re-download, a fine-tuned model): the cached F0 is stale and recomputed.
    state["fc.1.bias"] = torch.randn(360, generator=torch.Generator().manual_seed(3)) * 4
    torch.save(state, weights)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        info = _build(audio_dir, out_dir, **kwargs)
    assert info.stats == {"processed": 1, "reused": 0, "skipped": 0}
    assert f"the rmvpe weights changed ({weights.resolve()})" in caplog.text
    swapped = _row(out_dir)
    assert not np.array_equal(swapped["pitchf"], first["pitchf"])
    np.testing.assert_array_equal(swapped["phone"], first["phone"])  # same encoder: same features
    assert _build(audio_dir, out_dir, **kwargs).stats == {"processed": 0, "reused": 1, "skipped": 0}

    # Another --rmvpe file is another setting: refused, like any other, unless overwrite=True.
    other = tmp_path / "other.pt"
    os.link(weights, other)  # same bytes, same size and mtime: only the source differs
    with pytest.raises(DatasetBuildError, match=re.escape(f"rmvpe: '{weights}' -> '{other}'); pass overwrite=True")):
        _build(audio_dir, out_dir, **{**kwargs, "rmvpe": str(other)})
    info = _build(audio_dir, out_dir, **{**kwargs, "rmvpe": str(other)}, overwrite=True)
    assert info.stats["processed"] == 1 and load_rvc_dataset(out_dir)[1].rmvpe == str(other)
    np.testing.assert_array_equal(_row(out_dir)["pitchf"], swapped["pitchf"])


def test_work_cache_follows_the_content_encoder_weights(voiced_dir, tiny_encoder_dir, tiny_encoder, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    audio_dir, _ = voiced_dir
    encoder_dir = tmp_path / "encoder"
    encoder_dir.mkdir()
    for file in tiny_encoder_dir.iterdir():
        (encoder_dir / file.name).write_bytes(file.read_bytes())
    # pm needs no RMVPE, so --rmvpe is not part of its settings (not even checked to exist)
    kwargs = {"f0_method": "pm", "content_encoder": str(encoder_dir), "rmvpe": "nowhere/rmvpe.pt"}
    out_dir = tmp_path / "out"
    info = _build(audio_dir, out_dir, **kwargs)
    assert info.stats["processed"] == 1 and info.rmvpe is None
    first = _row(out_dir)
    assert _build(audio_dir, out_dir, **{**kwargs, "rmvpe": None}).stats["reused"] == 1

    # New weights in the same folder: features recomputed. final_proj's bias + 1 shifts every v1 feature by 1.
    tensors = load_file(encoder_dir / "model.safetensors")
    tensors["final_proj.bias"] += 1.0
    save_file(tensors, str(encoder_dir / "model.safetensors"), metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        info = _build(audio_dir, out_dir, **kwargs)
    assert info.stats == {"processed": 1, "reused": 0, "skipped": 0}
    assert f"the content encoder weights changed ({encoder_dir.resolve()})" in caplog.text
    shifted = _row(out_dir)
    np.testing.assert_allclose(shifted["phone"], first["phone"] + 1.0, atol=1e-5)
    np.testing.assert_array_equal(shifted["pitchf"], first["pitchf"])
    assert _build(audio_dir, out_dir, **kwargs).stats["reused"] == 1

    # A model object: its tensors identify it (it may have been changed since it was loaded).
    encoder = copy.deepcopy(tiny_encoder)
    object_out = tmp_path / "object_out"
    assert _build(audio_dir, object_out, f0_method="pm", content_encoder=encoder).stats["processed"] == 1
    assert _build(audio_dir, object_out, f0_method="pm", content_encoder=encoder).stats["reused"] == 1
    with torch.no_grad():
        encoder.final_proj.bias += 1.0
    assert _build(audio_dir, object_out, f0_method="pm", content_encoder=encoder).stats["processed"] == 1
    np.testing.assert_allclose(_row(object_out)["phone"], _row(tmp_path / "out")["phone"], atol=1e-5)


def test_cache_of_an_older_version_is_rebuilt_but_other_settings_still_refused(voiced_dir, tiny_encoder, tmp_path):
    audio_dir, _ = voiced_dir
    out_dir = tmp_path / "out"
    kwargs = {"f0_method": "pm", "content_encoder": tiny_encoder}
    _build(audio_dir, out_dir, **kwargs)
    settings_file = out_dir / "work" / "settings.json"
    settings = json.loads(settings_file.read_text())
    old = {k: v for k, v in settings.items() if k not in ("rmvpe", "fingerprints")} | {"cache_version": 1}
    settings_file.write_text(json.dumps(old))  # what rvc-peft wrote before fingerprints existed
    with pytest.raises(DatasetBuildError, match=r"sample_rate: 32000 -> 40000"):
        _build(audio_dir, out_dir, **{**kwargs, "sample_rate": "40k"})
    assert _build(audio_dir, out_dir, **kwargs).stats == {"processed": 1, "reused": 0, "skipped": 0}
    assert json.loads(settings_file.read_text()) == settings
    settings_file.write_text("{broken")
    with pytest.raises(DatasetBuildError, match=r"settings\.json: unreadable .*overwrite=True"):
        _build(audio_dir, out_dir, **kwargs)
    assert _build(audio_dir, out_dir, **kwargs, overwrite=True).stats["processed"] == 1
    assert json.loads(settings_file.read_text()) == settings
