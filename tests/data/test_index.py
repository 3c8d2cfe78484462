"""RVC's retrieval index: sizing rule, save/load round trip, and the 1/d^2 blend against brute force numpy."""

import json
import math

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
datasets = pytest.importorskip("datasets")

from rvc_peft.data.index import (
    IndexFileError,
    RetrievalIndex,
    build_index,
    build_index_from_dataset,
    ivf_list_count,
    load_index,
    rvc_index_filename,
    save_index,
)


def _features(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _brute_force_blend(feats, big_npy, index_rate, k=8):
    """RVC's formula with exact nearest neighbours found by numpy: score = squared L2, w = (1/score)^2."""
    d2 = ((feats[:, None, :].astype(np.float64) - big_npy[None].astype(np.float64)) ** 2).sum(-1)
    ix = np.argsort(d2, axis=1)[:, :k]
    score = np.take_along_axis(d2, ix, axis=1)
    weight = (1.0 / score) ** 2
    weight /= weight.sum(axis=1, keepdims=True)
    retrieved = (big_npy[ix] * weight[..., None]).sum(axis=1)
    return index_rate * retrieved + (1 - index_rate) * feats


@pytest.mark.parametrize(("n", "expected"), [(1, 1), (38, 1), (39, 1), (390, 10), (10_000, 256), (1_000_000, 16000)])
def test_ivf_list_count_is_rvcs_rule(n, expected):
    assert ivf_list_count(n) == expected == max(1, min(int(16 * math.sqrt(n)), n // 39))


def test_build_index_layout_and_determinism():
    feats = _features(2000)
    index = build_index(feats, show_progress=False)
    ivf = faiss.extract_index_ivf(index)
    assert index.ntotal == 2000 and index.d == 16
    assert ivf.nlist == ivf_list_count(2000) == 51 and ivf.nprobe == 1
    assert index.metric_type == faiss.METRIC_L2
    stored = index.reconstruct_n(0, index.ntotal)
    # every input row is stored exactly once (shuffled, like RVC)
    assert np.array_equal(np.sort(stored, axis=0), np.sort(feats, axis=0))
    assert not np.array_equal(stored, feats)
    again = build_index(feats, show_progress=False)
    assert np.array_equal(again.reconstruct_n(0, again.ntotal), stored)


def test_large_inputs_are_replaced_by_kmeans_centres():
    feats = _features(3000, dim=8)
    index = build_index(feats, max_vectors=1000, kmeans_centres=100, show_progress=False)
    assert index.ntotal == 100
    assert faiss.extract_index_ivf(index).nlist == ivf_list_count(100) == 2
    centres = index.reconstruct_n(0, 100)
    assert np.isfinite(centres).all() and not np.isin(centres, feats).all()


def test_save_load_round_trip(tmp_path):
    feats = _features(1500)
    index = build_index(feats, show_progress=False)
    path = save_index(index, tmp_path / rvc_index_filename(ivf_list_count(1500), "voice", "v2"))
    assert path.name == "added_IVF38_Flat_nprobe_1_voice_v2.index"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    loaded = load_index(path)
    assert loaded.index.ntotal == 1500 and faiss.extract_index_ivf(loaded.index).nprobe == 1
    assert np.array_equal(loaded.big_npy, index.reconstruct_n(0, 1500))
    query = _features(20, seed=5)
    assert np.array_equal(loaded.index.search(query, 8)[1], index.search(query, 8)[1])
    # the file is what faiss itself reads (RVC loads it with faiss.read_index)
    assert faiss.read_index(str(path)).ntotal == 1500


def test_blend_matches_brute_force():
    big = _features(300, dim=8, seed=1)
    # exact search (one IVF list == all vectors) so faiss neighbours equal the brute-force ones
    index = faiss.index_factory(8, "IVF1,Flat")
    index.train(big)
    index.add(big)
    retrieval = RetrievalIndex(index=index, big_npy=index.reconstruct_n(0, 300))
    feats = _features(40, dim=8, seed=2)
    for rate in (0.0, 0.33, 0.75, 1.0):
        np.testing.assert_allclose(retrieval.blend(feats, rate), _brute_force_blend(feats, big, rate),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(retrieval.blend(feats, 0.5, k=3), _brute_force_blend(feats, big, 0.5, k=3),
                               rtol=1e-4, atol=1e-5)
    assert retrieval.blend(feats, 0.0).dtype == np.float32


def test_blend_torch_input_and_edge_cases():
    torch = pytest.importorskip("torch")
    big = _features(100, dim=4, seed=3)
    index = faiss.index_factory(4, "IVF1,Flat")
    index.train(big)
    index.add(big)
    retrieval = RetrievalIndex(index=index, big_npy=big)
    # zero distance: a stored frame retrieves itself instead of becoming NaN (RVC would divide by zero)
    exact = retrieval.blend(big[:5], 1.0)
    np.testing.assert_allclose(exact, big[:5], atol=1e-5)
    # fewer stored vectors than k: missing neighbours (ix = -1) get no weight
    small = faiss.index_factory(4, "IVF1,Flat")
    small.train(big[:3])
    small.add(big[:3])
    few = RetrievalIndex(index=small, big_npy=big[:3]).blend(big[10:12], 1.0)
    np.testing.assert_allclose(few, _brute_force_blend(big[10:12], big[:3], 1.0, k=3), rtol=1e-4, atol=1e-5)
    queries = _features(10, dim=4, seed=9)
    as_tensor = retrieval.blend(torch.from_numpy(queries).double(), 0.75)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float64
    np.testing.assert_allclose(as_tensor.numpy(), _brute_force_blend(queries, big, 0.75), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[F, 4\]"):
        retrieval.blend(np.zeros((3, 5), np.float32), 0.5)
    with pytest.raises(ValueError, match="index_rate"):
        retrieval.blend(big[:2], 1.5)


def _write_dataset(root, phones, speakers):
    """A small dataset in the layout of INTERFACES.md (only the columns the index needs are meaningful)."""
    from rvc_peft.data.dataset import dataset_features

    rows = {"audio": [[0.0] * 10 for _ in phones], "phone": phones, "pitch": [[1] for _ in phones],
            "pitchf": [[0.0] for _ in phones], "speaker_id": speakers, "source_file": [f"{i}.wav" for i in
                                                                                       range(len(phones))],
            "offset": [0.0] * len(phones), "slice_index": list(range(len(phones)))}
    ds = datasets.Dataset.from_dict(rows, features=dataset_features(phones[0].shape[1], True))
    ds.save_to_disk(str(root / "dataset"))
    info = {"format": "rvc-peft-dataset", "format_version": 1, "sample_rate": 40000, "version": "v1", "use_f0": True,
            "f0_method": "rmvpe", "content_encoder": "test", "content_dim": phones[0].shape[1], "hop_length": 400,
            "num_rows": len(phones), "speakers": sorted(set(speakers)), "source": "preprocess"}
    (root / "rvc_dataset.json").write_text(json.dumps(info))
    return ds


def test_build_index_from_dataset(tmp_path):
    rng = np.random.default_rng(4)
    phones = [rng.standard_normal((n, 8)).astype(np.float32) for n in (30, 50, 45)]
    phones.append(np.full((5, 8), np.nan, np.float32))  # skipped, like RVC skips feature files with NaN
    ds = _write_dataset(tmp_path, phones, [0, 1, 0, 0])
    index = build_index_from_dataset(tmp_path, show_progress=False)
    stored = index.reconstruct_n(0, index.ntotal)
    expected = np.concatenate(phones[:3])
    assert index.ntotal == 125 and np.array_equal(np.sort(stored, axis=0), np.sort(expected, axis=0))
    only0 = build_index_from_dataset(ds, speaker_id=0, show_progress=False)
    assert only0.ntotal == 75
    with pytest.raises(IndexFileError, match="speaker 7"):
        build_index_from_dataset(ds, speaker_id=7, show_progress=False)
    with pytest.raises(IndexFileError, match="'features'"):
        build_index_from_dataset(ds, column="features", show_progress=False)


def test_load_index_errors(tmp_path):
    with pytest.raises(IndexFileError, match="no such index file"):
        load_index(tmp_path / "missing.index")
    junk = tmp_path / "junk.index"
    junk.write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexFileError, match="junk.index: not a readable faiss index"):
        load_index(junk)
    trained = faiss.index_factory(4, "IVF1,Flat")
    trained.train(_features(50, dim=4))
    save_index(trained, tmp_path / "trained_IVF1_Flat_nprobe_1_x_v1.index")
    with pytest.raises(IndexFileError, match="holds no vectors"):
        load_index(tmp_path / "trained_IVF1_Flat_nprobe_1_x_v1.index")
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((10, 4), np.nan, np.float32), show_progress=False)
    with pytest.raises(ValueError, match="shape"):
        build_index(np.zeros((0, 4), np.float32), show_progress=False)


def test_cli_index_command(tmp_path, capsys):
    from rvc_peft.cli import main

    rng = np.random.default_rng(6)
    (tmp_path / "ds").mkdir()
    _write_dataset(tmp_path / "ds", [rng.standard_normal((40, 8)).astype(np.float32) for _ in range(3)], [0, 0, 0])
    out = tmp_path / "voice.index"
    assert main(["index", str(tmp_path / "ds"), "--out", str(out), "--no-progress"]) == 0
    assert "indexed 120 vectors of width 8" in capsys.readouterr().out
    assert load_index(out).big_npy.shape == (120, 8)
    assert main(["index", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"rvc-peft index: error: no such file or folder: {tmp_path / 'nowhere'}\n"
