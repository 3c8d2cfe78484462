"""Without faiss (the optional [index] extra) the index commands fail with one clear line, not a traceback."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rvc_peft.cli import main
from rvc_peft.data.dataset import DatasetWriter, RVCDatasetInfo
from rvc_peft.data.index import FaissMissingError, build_index, load_index


def test_index_command_without_faiss(tmp_path, monkeypatch, capsys):
    with DatasetWriter(tmp_path / "ds", 4, False) as writer:
        writer.add({"audio": np.zeros(800, np.float32), "phone": np.ones((40, 4), np.float32), "speaker_id": 0,
                    "source_file": "a.wav", "offset": 0.0, "slice_index": 0})
        writer.finish(RVCDatasetInfo(sample_rate=40000, version="v1", use_f0=False, f0_method=None,
                                     content_encoder="x", content_dim=4, hop_length=400), progress=False)
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError, as when not installed
    out = tmp_path / "voice.index"

    assert main(["index", str(tmp_path / "ds"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rvc-peft index: error: the retrieval index needs faiss, which cannot be imported")
    assert err.endswith('install it with pip install "rvc-peft[index]" (faiss-cpu)\n') and err.count("\n") == 1
    assert not out.exists()

    # For library callers it is still an ImportError (a missing optional package), and a ValueError like our others
    with pytest.raises(ImportError, match=r"needs faiss"):
        load_index(out)
    with pytest.raises(FaissMissingError) as info:
        build_index(np.zeros((10, 4), np.float32), show_progress=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value.__cause__, ImportError)
