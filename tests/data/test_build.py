"""End to end: a folder of real audio files -> `rvc-peft preprocess` -> a dataset with RVC's shapes; resumable,
deterministic, and robust to bad files."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from rvc_peft.cli import main
from rvc_peft.data import DatasetBuildError, build_dataset, load_rvc_dataset
from rvc_peft.features.synthetic import voiced_signal


def _write_inputs(folder):
    folder.mkdir()
    speech, _ = voiced_signal(150.0, 4.5, 48000, seed=1)
    stereo = np.stack([speech, 0.6 * speech], axis=1)
    sf.write(folder / "speaker.flac", stereo, 48000, subtype="PCM_24")  # stereo, 24-bit, 48 kHz
    call, _ = voiced_signal(220.0, 2.5, 8000, seed=2)
    sf.write(folder / "phone_call.wav", call, 8000, subtype="PCM_16")  # 8 kHz telephone-band
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")  # not decodable
    return stereo.mean(axis=1)


def _arrow_bytes(out_dir):
    return {p.name: p.read_bytes() for p in sorted((out_dir / "dataset").iterdir())}


def test_preprocess_cli_end_to_end(tmp_path, tiny_encoder_dir, tiny_encoder, capsys):
    audio_dir, out_dir = tmp_path / "in", tmp_path / "out"
    _write_inputs(audio_dir)
    argv = ["preprocess", str(audio_dir), str(out_dir), "--sample-rate", "40k", "--version", "v1",
            "--f0-method", "pm", "--content-encoder", str(tiny_encoder_dir), "--no-progress"]
    assert main(argv) == 0
    assert "3 slices from 2 files (0 reused" in capsys.readouterr().out

    dataset, info = load_rvc_dataset(out_dir)
    meta = json.loads((out_dir / "rvc_dataset.json").read_text())
    assert meta["format"] == "rvc-peft-dataset" and meta["format_version"] == 1 and meta["source"] == "preprocess"
    assert (meta["sample_rate"], meta["version"], meta["use_f0"], meta["f0_method"]) == (40000, "v1", True, "pm")
    assert (meta["content_dim"], meta["hop_length"], meta["num_rows"], meta["speakers"]) == (256, 400, 3, [0])
    assert meta["content_encoder"] == str(tiny_encoder_dir)
    assert [s["file"] for s in meta["skipped"]] == ["broken.wav"]
    assert set(dataset.column_names) == {"audio", "phone", "pitch", "pitchf", "speaker_id", "source_file", "offset",
                                         "slice_index"}
    rows = list(dataset.with_format("numpy"))
    assert [(r["source_file"], float(r["offset"]), int(r["slice_index"])) for r in rows] == [
        ("phone_call.wav", 0.0, 0), ("speaker.flac", 0.0, 0), ("speaker.flac", pytest.approx(3.4), 1)]
    # 8 kHz * 5 = 2.5 s at 40 kHz; 4.5 s at 40 kHz = one 3.7 s piece + the 1.1 s tail from 3.4 s
    assert [len(r["audio"]) for r in rows] == [100000, 148000, 44000]
    for row, f0 in zip(rows, (220.0, 150.0, 150.0)):
        audio, phone, pitch, pitchf = row["audio"], row["phone"], row["pitch"], row["pitchf"]
        assert (audio.dtype, phone.dtype, pitch.dtype, pitchf.dtype) == (np.float32, np.float32, np.int64, np.float32)
        n16k = int(np.ceil(len(audio) * 16000 / 40000))
        frames = (n16k - 400) // 320 + 1  # HuBERT conv stack, 50 fps
        assert phone.shape == (frames, 256)
        assert len(pitch) == len(pitchf) == n16k // 160  # pm, padded to len // 160 like RVC training
        assert abs(len(audio) - 2 * frames * 400) <= 3 * 400 and abs(len(pitchf) - 2 * frames) <= 3
        assert 0.675 + 0.25 * 0.35 < np.abs(audio).max() < 0.675 + 0.25 * 0.6  # RVC's level: 0.675 + 0.25·peak
        voiced = pitchf[pitchf > 0]
        assert len(voiced) > 0.8 * len(pitchf) and abs(np.median(voiced) / f0 - 1) < 0.03
        from rvc_peft.features.pitch import f0_to_coarse

        np.testing.assert_array_equal(pitch, f0_to_coarse(pitchf))
        # content features are those of the slice's 16 kHz copy
        ref = tiny_encoder.extract(librosa.resample(audio, orig_sr=40000, target_sr=16000, res_type="soxr_hq"))
        np.testing.assert_allclose(phone, ref, atol=2e-4)

    # Re-run: every finished file comes from the work cache, nothing is recomputed or rewritten.
    work_files = sorted((out_dir / "work").glob("*.npz"))
    assert len(work_files) == 2
    stamps = {p: p.stat().st_mtime_ns for p in work_files}
    before = _arrow_bytes(out_dir)
    assert main(argv) == 0
    assert "3 slices from 2 files (2 reused from the work cache, 1 skipped)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in work_files} == stamps
    assert _arrow_bytes(out_dir) == before

    # Determinism: a fresh build with two worker processes gives byte-identical data and metadata.
    out2 = tmp_path / "out2"
    info2 = build_dataset(audio_dir, out2, sample_rate=40000, version="v1", f0_method="pm",
                          content_encoder=str(tiny_encoder_dir), num_workers=2, progress=False)
    assert info2.stats == {"processed": 2, "reused": 0, "skipped": 1}
    assert _arrow_bytes(out2) == before
    assert (out2 / "rvc_dataset.json").read_text() == (out_dir / "rvc_dataset.json").read_text()
    assert info == info2


def _tone_file(path, seconds, sr=16000, hz=200.0, amp=0.4):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr, subtype="FLOAT")


def test_bad_inputs_are_reported_and_nothing_is_lost(tmp_path, tiny_encoder, caplog):
    audio_dir, out_dir = tmp_path / "in", tmp_path / "out"
    _tone_file(audio_dir / "3" / "good.wav", 2.0)  # numbered sub-folder -> speaker 3
    _tone_file(audio_dir / "short.wav", 0.1)
    sf.write(audio_dir / "silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    nan = np.full(16000, 0.1, np.float32)
    nan[10] = np.nan
    sf.write(audio_dir / "nan.wav", nan, 16000, subtype="FLOAT")
    (audio_dir / "notes.txt").write_text("recorded on tuesday")
    kwargs = {"sample_rate": "32k", "version": "v1", "f0_method": None, "content_encoder": tiny_encoder,
              "progress": False}
    info = build_dataset(audio_dir, out_dir, speaker_id=5, **kwargs)

    reasons = {s["file"]: s["reason"] for s in info.skipped}
    assert sorted(reasons) == ["nan.wav", "notes.txt", "short.wav", "silence.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert "not a recognised audio file" in reasons["notes.txt"]
    assert reasons["short.wav"].startswith("too short (0.10 s)")
    assert reasons["silence.wav"].startswith("only silence")
    for name in reasons:  # each named while the run went on, and again in the summary
        assert sum(name in r.getMessage() for r in caplog.records) >= 2
    dataset, loaded = load_rvc_dataset(out_dir / "dataset")
    assert loaded.use_f0 is False and "pitch" not in dataset.column_names and loaded.speakers == [3]
    assert dataset["source_file"] == ["3/good.wav"] and len(dataset[0]["audio"]) == 64000
    before = _arrow_bytes(out_dir)

    # Only unusable files: a clear error listing them, and the existing dataset is untouched.
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "notes.txt").write_text("x")
    _tone_file(bad_dir / "short.wav", 0.1)
    with pytest.raises(DatasetBuildError, match=r"no usable audio(.|\n)*notes\.txt(.|\n)*short\.wav"):
        build_dataset(bad_dir, out_dir, **kwargs)
    assert _arrow_bytes(out_dir) == before and load_rvc_dataset(out_dir)[1].num_rows == 1
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporary folders left

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetBuildError, match="no files found"):
        build_dataset(empty, tmp_path / "out3", **kwargs)
    # Other settings on the same output folder: refused unless overwrite=True, which rebuilds from scratch.
    with pytest.raises(DatasetBuildError, match="sample_rate: 32000 -> 40000"):
        build_dataset(audio_dir, out_dir, **{**kwargs, "sample_rate": "40k"})
    info = build_dataset(audio_dir, out_dir, **{**kwargs, "sample_rate": "40k"}, overwrite=True)
    assert info.stats == {"processed": 3, "reused": 0, "skipped": 4} and info.sample_rate == 40000
    assert len(load_rvc_dataset(out_dir)[0][0]["audio"]) == 80000


class _FailingEncoder:
    """Stands in for a content encoder that breaks on one file (e.g. a model error)."""

    output_dim, name_or_path = 4, "failing"

    def __init__(self):
        self.calls = 0

    def extract(self, wav16k):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("simulated encoder failure")
        return np.zeros(((len(wav16k) - 400) // 320 + 1, 4), np.float32)


def test_a_feature_failure_skips_only_that_file(tmp_path, caplog):
    _tone_file(tmp_path / "in" / "a.wav", 1.0)
    _tone_file(tmp_path / "in" / "b.wav", 1.0)
    encoder = _FailingEncoder()
    info = build_dataset(tmp_path / "in", tmp_path / "out", sample_rate="40k", version="v2", f0_method=None,
                         content_encoder=encoder, progress=False)
    assert info.skipped == [{"file": "a.wav", "reason": "RuntimeError: simulated encoder failure"}]
    assert info.num_rows == 1 and info.content_dim == 4
    # the failed file is retried on the next run (no work file was written for it); b.wav is reused
    info = build_dataset(tmp_path / "in", tmp_path / "out", sample_rate="40k", version="v2", f0_method=None,
                         content_encoder=encoder, progress=False)
    assert info.stats == {"processed": 1, "reused": 1, "skipped": 0} and info.num_rows == 2
