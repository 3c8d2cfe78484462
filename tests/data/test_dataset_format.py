"""The on-disk dataset format: writer round trip, atomic replacement, and clear errors from `load_rvc_dataset`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from rvc_peft.data.dataset import (
    UNLOCKED_STALE_SECONDS,
    DatasetFormatError,
    DatasetWriter,
    RVCDatasetInfo,
    load_rvc_dataset,
    remove_stale_builds,
)

REPO = Path(__file__).resolve().parents[2]


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


_KILLED_WRITERS = """
import os, signal, sys
import numpy as np
from rvc_peft.data.dataset import INFO_FILE, DatasetWriter, RVCDatasetInfo

row = {"audio": np.zeros(800, np.float32), "phone": np.full((3, 4), 9, np.float32), "speaker_id": 0,
       "source_file": "new.wav", "offset": 0.0, "slice_index": 0}
adding = DatasetWriter(sys.argv[1], 4, False)  # killed while adding rows
adding.add(row)
swapping = DatasetWriter(sys.argv[2], 4, False)  # killed inside finish, between moving its dataset in and its json
for _ in range(3):
    swapping.add(row)
real_replace = os.replace

def replace(src, dst):
    if os.path.basename(dst) == INFO_FILE and os.path.dirname(os.path.abspath(dst)) == os.path.abspath(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

os.replace = replace
swapping.finish(RVCDatasetInfo(sample_rate=40000, version="v1", use_f0=False, f0_method=None, content_encoder="x",
                               content_dim=4, hop_length=400), progress=False)
"""


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_folders_of_killed_writers_are_removed_and_an_unfinished_swap_undone(tmp_path):
    import signal

    adding, swapping = tmp_path / "adding", tmp_path / "swapping"
    _write(swapping)  # the dataset a killed rebuild must not cost
    before = load_rvc_dataset(swapping)[0].to_dict()
    result = subprocess.run([sys.executable, "-c", _KILLED_WRITERS, str(adding), str(swapping)], cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    # What a hard kill leaves: each writer's folder and its lock file; in `swapping` the new table (no pitch
    # columns) already replaced dataset/ while rvc_dataset.json still describes the old pitch dataset
    for out_dir in (adding, swapping):
        (folder,) = [p for p in out_dir.iterdir() if p.is_dir() and p.name.startswith(".building-")]
        assert (out_dir / (folder.name + ".lock")).is_file()
    with pytest.raises(DatasetFormatError, match=r"swapping/dataset: missing columns \['pitch', 'pitchf'\]"):
        load_rvc_dataset(swapping)

    assert [p.parent.name for p in remove_stale_builds(swapping)] == ["swapping"]
    assert sorted(p.name for p in swapping.iterdir()) == ["dataset", "rvc_dataset.json"]
    assert load_rvc_dataset(swapping)[0].to_dict() == before  # the dataset from before the killed run is back

    _write(adding, rows=3)  # a new writer clears what the killed one left
    assert sorted(p.name for p in adding.iterdir()) == ["dataset", "rvc_dataset.json"]
    assert load_rvc_dataset(adding)[1].num_rows == 3


def test_folders_of_live_writers_are_left_alone(tmp_path):
    out_dir = tmp_path / "out"
    live = DatasetWriter(out_dir, 4, False)
    live.add({"audio": np.zeros(10), "phone": np.zeros((1, 4)), "speaker_id": 0, "source_file": "live.wav",
              "offset": 0.0, "slice_index": 0})
    (folder,) = [p for p in out_dir.iterdir() if p.is_dir()]
    day_ago = time.time() - 86400
    os.utime(folder, (day_ago, day_ago))  # however old: a held lock means a live writer
    assert remove_stale_builds(out_dir) == []
    _write(out_dir)  # another writer starts and finishes meanwhile
    assert folder.is_dir()
    info = live.finish(_info(use_f0=False), progress=False)
    assert info.num_rows == 1 and load_rvc_dataset(out_dir)[0]["source_file"] == ["live.wav"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["dataset", "rvc_dataset.json"]


def test_unlocked_leftovers_are_removed_only_when_old(tmp_path):
    out_dir = tmp_path / "out"
    _write(out_dir)
    legacy = out_dir / ".building-legacy1"  # an older rvc-peft's folder: no lock file to ask
    legacy.mkdir()
    (legacy / "rows.arrow").write_bytes(b"x" * 10)
    orphan = out_dir / ".building-orphan1.lock"  # a lock file without its folder
    orphan.write_bytes(b"")
    assert remove_stale_builds(out_dir) == []
    assert legacy.is_dir() and orphan.is_file()
    old = time.time() - UNLOCKED_STALE_SECONDS - 60
    for path in (legacy, legacy / "rows.arrow", orphan):
        os.utime(path, (old, old))
    (legacy / "recent.arrow").write_bytes(b"y")  # anything recently written keeps the folder
    assert remove_stale_builds(out_dir) == [] and legacy.is_dir() and not orphan.exists()
    os.utime(legacy / "recent.arrow", (old, old))
    os.utime(legacy, (old, old))
    assert remove_stale_builds(out_dir) == [legacy]
    assert sorted(p.name for p in out_dir.iterdir()) == ["dataset", "rvc_dataset.json"]
    assert load_rvc_dataset(out_dir)[1].num_rows == 2


def test_swap_killed_after_moving_the_old_dataset_aside_is_undone(tmp_path):
    # The other unfinished state of `finish`: the old dataset/ already in the build folder's previous/, the new
    # one not yet moved in (made here by hand: the subprocess test above covers the later kill point).
    out_dir, other = tmp_path / "out", tmp_path / "other"
    _write(out_dir)
    before = load_rvc_dataset(out_dir)[0].to_dict()
    _write(other, rows=3)
    folder = out_dir / ".building-killed1"
    folder.mkdir()
    (out_dir / ".building-killed1.lock").write_bytes(b"")  # nobody holds it: its writer is dead
    shutil.copytree(other / "dataset", folder / "dataset")
    shutil.copy(other / "rvc_dataset.json", folder / "rvc_dataset.json")
    os.replace(out_dir / "dataset", folder / "previous")
    assert remove_stale_builds(out_dir) == [folder]
    assert sorted(p.name for p in out_dir.iterdir()) == ["dataset", "rvc_dataset.json"]
    assert load_rvc_dataset(out_dir)[0].to_dict() == before
