"""The on-disk dataset format: writer round trip, atomic replacement, and clear errors from `load_rvc_dataset`."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest

from rvc_peft.data.dataset import DatasetFormatError, DatasetWriter, RVCDatasetInfo, load_rvc_dataset


def _info(**kw):
    base = {"sample_rate": 40000, "version": "v1", "use_f0": True, "f0_method": "pm", "content_encoder": "x",
            "content_dim": 4, "hop_length": 400}
    return RVCDatasetInfo(**{**base, **kw})


def _write(out_dir, rows=2, use_f0=True):
    with DatasetWriter(out_dir, 4, use_f0) as writer:
        for k in range(rows):
            row = {"audio": np.full(800 * (k + 1), k, np.float32), "phone": np.full((k + 1, 4), k, np.float32),
                   "speaker_id": k, "source_file": f"f{k}.wav", "offset": 0.5 * k, "slice_index": k}
            if use_f0:
                row.update(pitch=np.arange(2 * k + 2), pitchf=np.linspace(100, 200, 2 * k + 2))
            writer.add(row)
        return writer.finish(_info(use_f0=use_f0))


def test_round_trip_and_replacement(tmp_path):
    info = _write(tmp_path / "out")
    dataset, loaded = load_rvc_dataset(tmp_path / "out")
    assert loaded == info and loaded.num_rows == 2 and loaded.speakers == [0, 1]
    row = dataset.with_format("numpy")[1]
    assert row["phone"].shape == (2, 4) and row["pitch"].dtype == np.int64 and row["pitchf"].dtype == np.float32
    assert row["offset"] == np.float32(0.5) and row["source_file"] == "f1.wav"
    _write(tmp_path / "out", rows=3, use_f0=False)  # replaces both the table and the metadata
    dataset, loaded = load_rvc_dataset(tmp_path / "out")
    assert len(dataset) == 3 and loaded.use_f0 is False and "pitch" not in dataset.column_names
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset", "rvc_dataset.json"]


def test_failed_write_keeps_previous_dataset(tmp_path):
    _write(tmp_path / "out")
    with (pytest.raises(ValueError, match=r"bad\.wav: content features of shape \(3, 5\)"),
          DatasetWriter(tmp_path / "out", 4, False) as writer):
        writer.add({"audio": np.zeros(10), "phone": np.zeros((3, 5)), "speaker_id": 0, "source_file": "bad.wav",
                    "offset": 0.0, "slice_index": 0})
    assert load_rvc_dataset(tmp_path / "out")[1].num_rows == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset", "rvc_dataset.json"]


def test_load_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such folder"):
        load_rvc_dataset(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetFormatError, match="not a folder"):
        load_rvc_dataset(tmp_path / "file.txt")
    with pytest.raises(DatasetFormatError, match=r"not an rvc-peft dataset \(rvc_dataset.json not found\)"):
        load_rvc_dataset(tmp_path)
    datasets.Dataset.from_dict({"a": [1]}).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetFormatError, match="a `datasets` folder without rvc_dataset.json"):
        load_rvc_dataset(tmp_path / "plain")

    out = tmp_path / "out"
    _write(out)
    meta = json.loads((out / "rvc_dataset.json").read_text())

    def expect(message, **changes):
        (out / "rvc_dataset.json").write_text(json.dumps({**meta, **changes}))
        with pytest.raises(DatasetFormatError, match=message):
            load_rvc_dataset(out)

    expect("not an rvc-peft dataset description", format="something-else")
    expect("newer than this rvc-peft understands", format_version=2)
    expect("says 5 rows but the dataset has 2", num_rows=5)
    (out / "rvc_dataset.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="rvc_dataset.json: unreadable"):
        load_rvc_dataset(out)
    (out / "rvc_dataset.json").write_text(json.dumps(meta))
    no_pitch = tmp_path / "nopitch"
    _write(no_pitch, use_f0=False)
    (no_pitch / "rvc_dataset.json").write_text(json.dumps({**meta, "use_f0": True}))
    with pytest.raises(DatasetFormatError, match=r"missing columns \['pitch', 'pitchf'\]"):
        load_rvc_dataset(no_pitch)
    with pytest.raises(ValueError, match="refusing to write an empty dataset"):
        _write(out, rows=0)
    assert load_rvc_dataset(out)[1].num_rows == 2  # the refused write left the old dataset in place
    expect(r"the dataset is empty \(0 slices\)", num_rows=0)
    (out / "rvc_dataset.json").write_text(json.dumps(meta))
    shutil.rmtree(out / "dataset")
    with pytest.raises(DatasetFormatError, match="dataset/ is missing"):
        load_rvc_dataset(out)
