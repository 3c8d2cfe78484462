"""Importing RVC WebUI / Applio experiment folders written in their exact on-disk layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.io import wavfile

from rvc_peft.cli import main
from rvc_peft.data import ExperimentImportError, import_rvc_experiment, load_rvc_dataset


def _fake_experiment(root, names, *, sr, dim, wavs="0_gt_wavs", feats=None, coarse="2a_f0", hz="2b-f0nsf",
                     use_f0=True, seed=0):
    """Write slices the way RVC does: scipy float32 WAVs, np.save("<name>.wav") -> "<name>.wav.npy"."""
    rng = np.random.default_rng(seed)
    feats = feats or f"3_feature{dim}"
    expected = {}
    for name in names:
        frames = int(rng.integers(20, 40))
        audio = rng.uniform(-0.9, 0.9, 2 * frames * sr // 100).astype(np.float32)
        phone = rng.standard_normal((frames, dim)).astype(np.float32)
        (root / wavs).mkdir(parents=True, exist_ok=True)
        (root / feats).mkdir(parents=True, exist_ok=True)
        wavfile.write(root / wavs / f"{name}.wav", sr, audio)
        np.save(root / feats / f"{name}.npy", phone)
        entry = {"audio": audio, "phone": phone}
        if use_f0:
            pitchf = rng.uniform(80, 400, 2 * frames + 1).astype(np.float32)
            pitch = rng.integers(1, 256, 2 * frames + 1).astype(np.int64)
            (root / coarse).mkdir(exist_ok=True)
            (root / hz).mkdir(exist_ok=True)
            np.save(str(root / coarse / f"{name}.wav"), pitch)  # numpy appends ".npy"
            np.save(str(root / hz / f"{name}.wav"), pitchf)
            entry.update(pitch=pitch, pitchf=pitchf)
        expected[name] = entry
    return expected


def _check_rows(dataset, expected, names, use_f0):
    rows = list(dataset.with_format("numpy"))
    assert len(rows) == len(names)
    for row, name in zip(rows, names):
        want = expected[name]
        assert row["source_file"].endswith(f"/{name}.wav")
        np.testing.assert_array_equal(row["audio"], want["audio"])
        np.testing.assert_array_equal(row["phone"], want["phone"])
        if use_f0:
            np.testing.assert_array_equal(row["pitch"], want["pitch"])
            np.testing.assert_array_equal(row["pitchf"], want["pitchf"])
            assert row["pitch"].dtype == np.int64 and row["pitchf"].dtype == np.float32
        assert np.isnan(row["offset"]) and row["slice_index"] == int(name.split("_")[-1])
    return rows


def test_webui_v2_experiment(tmp_path):
    exp = tmp_path / "logs" / "voice"
    names = ["0_0", "0_1", "0_10", "1_0"]
    expected = _fake_experiment(exp, names, sr=40000, dim=768)
    wavfile.write(exp / "0_gt_wavs" / "2_0.wav", 40000, np.zeros(800, np.float32))  # no features: left out
    (exp / "config.json").write_text(json.dumps({"data": {"sampling_rate": 40000}}))
    lines = [f"/abs/logs/voice/0_gt_wavs/{n}.wav|/abs/3_feature768/{n}.npy|a|b|2" for n in names]
    lines.append("/abs/logs/mute/0_gt_wavs/mute40k.wav|/abs/logs/mute/3_feature768/mute.npy|c|d|2")
    (exp / "filelist.txt").write_text("\n".join(lines))
    info = import_rvc_experiment(exp, tmp_path / "out", progress=False)
    assert (info.version, info.sample_rate, info.use_f0, info.content_dim, info.hop_length) == ("v2", 40000, True,
                                                                                              768, 400)
    assert info.source == "rvc-experiment" and info.speakers == [2] and info.num_rows == 4
    assert info.skipped == [{"file": "0_gt_wavs/2_0.wav", "reason": "missing features or pitch"}]
    dataset, loaded = load_rvc_dataset(tmp_path / "out")
    assert loaded == info
    rows = _check_rows(dataset, expected, names, True)  # natural order: 0_0, 0_1, 0_10, 1_0
    assert {int(r["speaker_id"]) for r in rows} == {2}


def test_applio_v1_experiment_speakers_from_names(tmp_path):
    exp = tmp_path / "applio"
    names = ["0_0_0", "0_0_1", "3_1_0"]
    expected = _fake_experiment(exp, names, sr=48000, dim=256, wavs="sliced_audios", feats="extracted",
                                coarse="f0", hz="f0_voiced")
    (exp / "model_info.json").write_text(json.dumps({"embedder_model": "contentvec", "f0_method": "rmvpe"}))
    info = import_rvc_experiment(exp, tmp_path / "out", sample_rate="48k", progress=False)
    assert (info.version, info.sample_rate, info.f0_method, info.content_encoder) == ("v1", 48000, "rmvpe",
                                                                                    "contentvec")
    dataset, _ = load_rvc_dataset(tmp_path / "out")
    rows = _check_rows(dataset, expected, names, True)
    assert [int(r["speaker_id"]) for r in rows] == [0, 0, 3] and info.speakers == [0, 3]


def test_no_f0_experiment_via_cli(tmp_path, capsys):
    exp = tmp_path / "nof0"
    names = ["0_0", "0_1"]
    expected = _fake_experiment(exp, names, sr=32000, dim=256, use_f0=False)
    assert main(["import-experiment", str(exp), str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 slices (v1, 32000 Hz, without pitch)" in capsys.readouterr().out
    dataset, info = load_rvc_dataset(tmp_path / "out")
    assert info.use_f0 is False and info.f0_method is None and "pitch" not in dataset.column_names
    _check_rows(dataset, expected, names, False)
    # An existing dataset is only replaced on request.
    assert main(["import-experiment", str(exp), str(tmp_path / "out"), "--no-progress"]) == 1
    assert "already holds a dataset" in capsys.readouterr().err


def test_import_errors(tmp_path):
    with pytest.raises(ExperimentImportError, match="not an RVC experiment"):
        import_rvc_experiment(tmp_path, tmp_path / "out")
    exp = tmp_path / "exp"
    _fake_experiment(exp, ["0_0"], sr=40000, dim=768)
    with pytest.raises(ExperimentImportError, match="slices are at 40000 Hz, not the requested 48000 Hz"):
        import_rvc_experiment(exp, tmp_path / "out", sample_rate="48k")
    with pytest.raises(ExperimentImportError, match=r"no features for v1 \(3_feature256/ missing\)"):
        import_rvc_experiment(exp, tmp_path / "out", version="v1")
    for f in (exp / "2b-f0nsf").iterdir():
        f.unlink()
    with pytest.raises(ExperimentImportError, match="pitch experiment without 2b-f0nsf/ files"):
        import_rvc_experiment(exp, tmp_path / "out")
    bad = tmp_path / "bad"
    _fake_experiment(bad, ["0_0"], sr=40000, dim=768, use_f0=False)
    np.save(bad / "3_feature768" / "0_0.npy", np.zeros((5, 256), np.float32))
    with pytest.raises(ExperimentImportError, match=r"0_0\.npy: shape \(5, 256\), expected \[frames, 768\]"):
        import_rvc_experiment(bad, tmp_path / "out2")
    assert not (tmp_path / "out2" / "dataset").exists()
