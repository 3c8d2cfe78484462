"""RVC's faiss retrieval index: build it from content features, save/load RVC `.index` files, blend at conversion.

Building follows RVC's "train index" step: rows shuffled; more than 200,000 rows are replaced by 10,000 k-means
centres; `n_ivf = min(int(16 * sqrt(N)), N // 39)` (at least 1); `faiss.index_factory(E, "IVF{n_ivf},Flat")`
(L2) with `nprobe = 1` stored in the index; trained on all rows, then rows added in batches of 8192.
RVC clusters with scikit-learn's MiniBatchKMeans; here faiss's own `faiss.Kmeans` (full-batch Lloyd, seeded) is
used so the `[index]` extra needs nothing else -- the centres differ numerically, their role is the same.

The blend at conversion time is RVC's: the k = 8 nearest stored vectors of each frame (squared L2 distances `d`)
are averaged with weights `(1/d)^2` normalised per frame, and `index_rate * retrieved + (1 - index_rate) * feats`.
faiss needs the `[index]` extra (`pip install "rvc-peft[index]"`) and is imported only when used.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write

__all__ = [
    "ADD_BATCH_SIZE",
    "FaissMissingError",
    "IndexFileError",
    "RetrievalIndex",
    "build_index",
    "build_index_from_dataset",
    "ivf_list_count",
    "load_index",
    "rvc_index_filename",
    "save_index",
]

ADD_BATCH_SIZE = 8192
MAX_VECTORS = 200_000  # above this RVC indexes k-means centres instead of the frames
KMEANS_CENTRES = 10_000
_MIN_DISTANCE = 1e-12  # zero distances are clamped to this before 1/d^2 (see RetrievalIndex.blend)


class IndexFileError(ValueError):
    """An index file or feature source that cannot be used (the message names the file and the problem)."""


class FaissMissingError(ImportError, ValueError):
    """faiss (the optional `[index]` extra) cannot be imported.

    An ImportError, as callers expect of a missing optional package, and a ValueError, like every rvc-peft error
    the command line reports as a one-line message instead of a traceback.
    """


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise FaissMissingError(f'the retrieval index needs faiss, which cannot be imported ({exc}); install it with '
                                'pip install "rvc-peft[index]" (faiss-cpu)') from exc
    return faiss


def ivf_list_count(num_vectors: int) -> int:
    """RVC's number of IVF lists: `max(1, min(int(16 * sqrt(N)), N // 39))`."""
    return max(1, min(int(16 * math.sqrt(num_vectors)), num_vectors // 39))


def rvc_index_filename(num_lists: int, experiment: str, version: str) -> str:
    """RVC's name of a finished index: `added_IVF{n}_Flat_nprobe_1_{experiment}_{version}.index`."""
    return f"added_IVF{num_lists}_Flat_nprobe_1_{experiment}_{version}.index"


def build_index(
    features: np.ndarray,
    *,
    seed: int = 0,
    max_vectors: int = MAX_VECTORS,
    kmeans_centres: int = KMEANS_CENTRES,
    show_progress: bool = True,
) -> Any:
    """features [N, E] (50 fps content frames, float) -> a trained `faiss.IndexIVFFlat` holding them (see module doc).

    `seed` makes the shuffle and k-means deterministic. Raises `ValueError` for empty, non-2-D or non-finite input.
    """
    from tqdm.auto import tqdm

    faiss = _faiss()
    vectors = np.asarray(features, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"expected features [N, E] with N, E > 0, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("features contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    vectors = np.ascontiguousarray(vectors[rng.permutation(len(vectors))])
    if len(vectors) > max_vectors:
        kmeans = faiss.Kmeans(vectors.shape[1], kmeans_centres, niter=25, seed=seed, verbose=False)
        kmeans.train(vectors)
        vectors = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    num_lists = ivf_list_count(len(vectors))
    index = faiss.index_factory(vectors.shape[1], f"IVF{num_lists},Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(vectors)
    for start in tqdm(range(0, len(vectors), ADD_BATCH_SIZE), desc="adding to index", unit="batch",
                      disable=not show_progress):
        index.add(vectors[start:start + ADD_BATCH_SIZE])
    return index


def _phone_matrices(dataset: Any, column: str, speaker_id: int | None) -> list[np.ndarray]:
    if column not in dataset.column_names:
        raise IndexFileError(f"the dataset has no {column!r} column (columns: {', '.join(dataset.column_names)})")
    if speaker_id is not None:
        dataset = dataset.filter(lambda sid: sid == speaker_id, input_columns="speaker_id")
    matrices = []
    for row in dataset.select_columns([column]).with_format("numpy"):
        phone = np.asarray(row[column], dtype=np.float32)
        if phone.ndim == 1 and phone.dtype == object:  # ragged rows come back as an array of arrays
            phone = np.stack(phone).astype(np.float32)
        if phone.ndim == 2 and phone.shape[0] and np.isfinite(phone).all():
            matrices.append(phone)  # like RVC, frames with NaN never reach the index
    return matrices


def build_index_from_dataset(
    path_or_dataset: str | os.PathLike | Any,
    *,
    column: str = "phone",
    speaker_id: int | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> Any:
    """A faiss index of all `phone` frames [F, E] of an rvc-peft dataset (rows in dataset order; RVC's rule).

    `path_or_dataset` is a folder written by `rvc-peft preprocess` (read with `load_rvc_dataset`) or a
    `datasets.Dataset`. `speaker_id` keeps one speaker's rows (RVC builds one index per voice). Rows with NaN or
    no frames are left out, as RVC skips such feature files.
    """
    _faiss()  # a missing faiss fails before reading a large dataset, not after
    if isinstance(path_or_dataset, (str, os.PathLike)):
        from .dataset import load_rvc_dataset

        dataset, _info = load_rvc_dataset(path_or_dataset)
        source = os.fspath(path_or_dataset)
    else:
        dataset, source = path_or_dataset, "the dataset"
    matrices = _phone_matrices(dataset, column, speaker_id)
    if not matrices:
        who = f" for speaker {speaker_id}" if speaker_id is not None else ""
        raise IndexFileError(f"{source}: no usable {column!r} features{who} to index")
    widths = {m.shape[1] for m in matrices}
    if len(widths) != 1:
        raise IndexFileError(f"{source}: {column!r} rows have different widths {sorted(widths)}")
    return build_index(np.concatenate(matrices), seed=seed, show_progress=show_progress)


def save_index(index: Any, path: str | os.PathLike) -> Path:
    """Write `index` (a faiss index or `RetrievalIndex`) as an RVC `.index` file (`faiss.write_index`), atomically."""
    faiss = _faiss()
    index = index.index if isinstance(index, RetrievalIndex) else index
    path = Path(path)
    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    return path


@dataclass
class RetrievalIndex:
    """A loaded retrieval index: the faiss `index` and `big_npy` [N, E], the stored vectors by id."""

    index: Any
    big_npy: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.big_npy.shape[1])

    def blend(self, feats: np.ndarray | Any, index_rate: float, k: int = 8) -> np.ndarray | Any:
        """RVC's retrieval blend of content features [F, E] (numpy, or a torch tensor -> same type/device/dtype).

        For each frame: `score, ix = index.search(frame, k)` (squared L2), `w = (1/score)^2` normalised to sum 1,
        `retrieved = sum_k w_k * big_npy[ix_k]`, result `index_rate * retrieved + (1 - index_rate) * feats`.
        Differences from RVC, both only where RVC would produce inf/NaN or garbage: a zero distance (the frame is
        stored in the index) is clamped to 1e-12, so an exact match takes (almost) all the weight instead of making
        the frame NaN; neighbours faiss could not fill (`ix = -1`, fewer than k vectors in the probed list) get
        weight 0 instead of reading `big_npy[-1]`, and a frame without any neighbour keeps its features.
        """
        if not 0.0 <= index_rate <= 1.0:
            raise ValueError(f"index_rate must be in [0, 1], got {index_rate}")
        tensor = None
        if not isinstance(feats, np.ndarray) and hasattr(feats, "detach"):
            tensor, feats = feats, feats.detach().float().cpu().numpy()
        query = np.ascontiguousarray(feats, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"expected features [F, {self.dim}], got shape {query.shape}")
        if index_rate == 0.0 or len(query) == 0:
            blended = query
        else:
            score, ix = self.index.search(query, k)
            found = ix >= 0
            weight = np.where(found, 1.0 / np.maximum(score.astype(np.float64), _MIN_DISTANCE) ** 2, 0.0)
            total = weight.sum(axis=1, keepdims=True)
            weight = np.divide(weight, total, out=np.zeros_like(weight), where=total > 0).astype(np.float32)
            retrieved = np.einsum("fk,fke->fe", weight, self.big_npy[np.where(found, ix, 0)])
            retrieved = np.where(total > 0, retrieved, query)
            blended = (index_rate * retrieved + (1.0 - index_rate) * query).astype(np.float32)
        if tensor is not None:
            import torch

            return torch.from_numpy(blended).to(device=tensor.device, dtype=tensor.dtype)
        return blended


def load_index(path: str | os.PathLike) -> RetrievalIndex:
    """Read an RVC `.index` file (`faiss.read_index`) and reconstruct its vectors (`reconstruct_n`) as `big_npy`."""
    faiss = _faiss()
    path = Path(path)
    if path.is_dir():
        raise IndexFileError(f"{path}: is a folder, not an index file")
    if not path.is_file():
        raise IndexFileError(f"{path}: no such index file")
    size = path.stat().st_size
    if size == 0:
        raise IndexFileError(f"{path}: file is empty")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        reason = first[-1] if first else "unknown error"
        # faiss prefixes its C++ location ("Error in void faiss::read_... at index_read.cpp:252: Error: ...")
        reason = reason.rpartition("Error: ")[2] or reason
        raise IndexFileError(f"{path}: not a readable faiss index (truncated or damaged: {reason})") from exc
    if index.ntotal == 0:
        raise IndexFileError(f"{path}: the index holds no vectors (an RVC 'trained_*' file? use the 'added_*' one)")
    # A damaged header can claim far more vectors than the file holds; RVC's IVF-Flat files store every vector in
    # full, and even compressed indexes hold more than 1/64 of the float32 size: refuse before allocating.
    claimed = int(index.ntotal) * int(index.d) * 4
    if claimed > 64 * size + (1 << 20):
        raise IndexFileError(f"{path}: claims {index.ntotal} vectors of {index.d} dims ({claimed} bytes), far more than "
                             f"a {size}-byte file holds (damaged header)")
    try:
        big_npy = np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise IndexFileError(f"{path}: cannot read the index's vectors ({first[-1] if first else exc})") from exc
    # faiss files carry no checksum: at least refuse values no content feature has (a damaged file, not a voice)
    if not np.isfinite(big_npy).all():
        raise IndexFileError(f"{path}: the index's vectors contain NaN or inf (damaged file)")
    largest = float(np.abs(big_npy).max())
    if largest > _MAX_FEATURE_MAGNITUDE:
        raise IndexFileError(f"{path}: the index's vectors reach |value| {largest:.1e}, which no content feature has "
                             "(damaged file)")
    return RetrievalIndex(index=index, big_npy=big_npy)


# HuBERT/ContentVec features and the lab encoder's stay within tens; 1e4 is a generous ceiling.
_MAX_FEATURE_MAGNITUDE = 1e4
