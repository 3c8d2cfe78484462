"""Training batches from an rvc-peft dataset, prepared the way RVC's `TextAudioLoaderMultiNSFsid` does.

Per row: content features repeated ×2 (50 → 100 fps), everything capped at 900 frames, the linear spectrogram
computed from `audio` with the model's STFT numbers, and when the feature and spectrogram lengths differ all
streams are cut to the shorter one (the wave to `frames · hop` samples). Batches are zero-padded and sorted by
spectrogram length, longest first, like RVC's collate.

`LengthBucketBatchSampler` replaces RVC's `DistributedBucketSampler`: batches are drawn from length buckets
(boundaries every 100 frames), the order is a pure function of `(seed, epoch)`, every rank gets the same number of
batches (a multiple of the gradient-accumulation steps, topped up by wrapping around), and an epoch can be entered
part-way (`set_epoch(epoch, skip_batches=n)`), which is what makes a resumed run continue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..features.spectrogram import linear_spectrogram
from ..models import RVCConfig

MAX_FRAMES = 900  # RVC caps every training item at 900 frames (9 s)
BUCKET_WIDTH = 100  # RVC's bucket boundaries: 100, 200, ..., 900 frames
FEATURE_REPEAT = 2  # content features are 50 fps, the synthesizer runs at 100 fps


def _list_lengths(dataset: Any, column: str) -> np.ndarray:
    """Row lengths of a list/array column, read from Arrow offsets without decoding the rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = dataset.with_format("arrow")[column]  # honours select()/shuffle() views
    chunks = arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]
    lengths = []
    for chunk in chunks:
        if isinstance(chunk.type, pa.ExtensionType):  # datasets' Array2D: a list of rows underneath
            chunk = chunk.storage
        lengths.append(pc.list_value_length(chunk).to_numpy(zero_copy_only=False))
    return np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, dtype=np.int64)


def aligned_frames(audio_samples: np.ndarray, phone_frames: np.ndarray, pitch_frames: np.ndarray | None,
                   hop_length: int) -> np.ndarray:
    """Frames each row has after RVC's alignment: min(2·features capped at 900, samples // hop[, pitch frames])."""
    frames = np.minimum(np.minimum(phone_frames * FEATURE_REPEAT, MAX_FRAMES), audio_samples // hop_length)
    if pitch_frames is not None:
        frames = np.minimum(frames, pitch_frames)
    return frames


class RVCTrainingDataset(Dataset):
    """A `datasets.Dataset` of rvc-peft rows seen as RVC training items.

    item -> {"phone" [T, E] float32 (100 fps), "pitch" [T] int64 and "pitchf" [T] float32 (pitch models only),
    "spec" [n_fft//2+1, T] float32 linear magnitude, "wave" [T·hop] float32, "speaker_id" int}.
    `indices` restricts the view to some rows (e.g. without the held-out validation clips).
    """

    def __init__(self, dataset: Any, config: RVCConfig, indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset.with_format("numpy")
        self.config = config
        self.use_f0 = bool(config.use_f0)
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        audio = _list_lengths(dataset, "audio")
        phone = _list_lengths(dataset, "phone")
        pitch = _list_lengths(dataset, "pitchf") if self.use_f0 else None
        self.all_frames = aligned_frames(audio, phone, pitch, config.hop_length)
        self.frames = self.all_frames[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def raw_row(self, index: int) -> dict[str, Any]:
        return self.dataset[int(self.indices[index])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return prepare_item(self.raw_row(index), self.config)


def prepare_item(row: dict[str, Any], config: RVCConfig) -> dict[str, Any]:
    """One dataset row -> one aligned training item (see `RVCTrainingDataset`)."""
    hop = config.hop_length
    phone = np.repeat(np.asarray(row["phone"], dtype=np.float32), FEATURE_REPEAT, axis=0)[:MAX_FRAMES]
    wave = torch.from_numpy(np.ascontiguousarray(row["audio"], dtype=np.float32))
    spec = linear_spectrogram(wave, config.filter_length, hop, config.win_length)  # [S, L // hop]
    frames = min(phone.shape[0], spec.shape[-1])
    item: dict[str, Any] = {"speaker_id": int(row["speaker_id"])}
    if config.use_f0:
        pitch = np.asarray(row["pitch"], dtype=np.int64)[:MAX_FRAMES]
        pitchf = np.asarray(row["pitchf"], dtype=np.float32)[:MAX_FRAMES]
        frames = min(frames, pitch.shape[0], pitchf.shape[0])
        item["pitch"] = torch.from_numpy(np.ascontiguousarray(pitch[:frames]))
        item["pitchf"] = torch.from_numpy(np.ascontiguousarray(pitchf[:frames]))
    item["phone"] = torch.from_numpy(np.ascontiguousarray(phone[:frames]))
    item["spec"] = spec[:, :frames].contiguous()
    item["wave"] = wave[: frames * hop].contiguous()
    return item


def collate_batch(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Zero-pad a list of items into a batch, sorted by spectrogram length (longest first) as RVC does.

    -> phone [B, T, E], phone_lengths [B], pitch [B, T] long / pitchf [B, T] (pitch models), spec [B, S, T],
    spec_lengths [B], wave [B, 1, T·hop] (its valid length is spec_lengths · hop), speaker_id [B].
    """
    order = sorted(range(len(items)), key=lambda i: items[i]["spec"].shape[-1], reverse=True)
    items = [items[i] for i in order]
    batch_size = len(items)
    max_frames = max(item["spec"].shape[-1] for item in items)
    max_samples = max(item["wave"].shape[-1] for item in items)
    spec_bins = items[0]["spec"].shape[0]
    feature_dim = items[0]["phone"].shape[-1]
    phone = torch.zeros(batch_size, max_frames, feature_dim)
    spec = torch.zeros(batch_size, spec_bins, max_frames)
    wave = torch.zeros(batch_size, 1, max_samples)
    has_pitch = "pitch" in items[0]
    pitch = torch.zeros(batch_size, max_frames, dtype=torch.long) if has_pitch else None
    pitchf = torch.zeros(batch_size, max_frames) if has_pitch else None
    lengths = torch.zeros(batch_size, dtype=torch.long)
    for i, item in enumerate(items):
        n = item["spec"].shape[-1]
        lengths[i] = n
        phone[i, :n] = item["phone"]
        spec[i, :, :n] = item["spec"]
        wave[i, 0, : item["wave"].shape[-1]] = item["wave"]
        if has_pitch:
            pitch[i, :n] = item["pitch"]
            pitchf[i, :n] = item["pitchf"]
    batch = {
        "phone": phone, "phone_lengths": lengths, "spec": spec, "spec_lengths": lengths.clone(), "wave": wave,
        "speaker_id": torch.tensor([item["speaker_id"] for item in items], dtype=torch.long),
    }
    if has_pitch:
        batch["pitch"] = pitch
        batch["pitchf"] = pitchf
    return batch


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Deterministic, rank-aware batches of similar-length items.

    lengths: frames per item. Each epoch the items of every length bucket are shuffled with a generator seeded by
    `seed + epoch`, cut into batches, and the batches shuffled; the list is then topped up (wrapping around) to a
    multiple of `num_replicas · gradient_accumulation_steps` and rank `rank` takes every `num_replicas`-th batch.
    `bucket_width=None` disables bucketing (one bucket). `set_epoch(epoch, skip_batches=n)` makes the next
    iteration start at this rank's batch `n` of that epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, bucket_width: int | None = BUCKET_WIDTH, gradient_accumulation_steps: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("no training items")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.accumulation = max(1, gradient_accumulation_steps)
        if bucket_width:
            keys = np.minimum(self.lengths // bucket_width, MAX_FRAMES // bucket_width)
        else:
            keys = np.zeros_like(self.lengths)
        self.buckets = [np.flatnonzero(keys == key) for key in np.unique(keys)]
        self.epoch = 0
        self.skip_batches = 0
        total = sum(math.ceil(len(bucket) / batch_size) for bucket in self.buckets)
        group = self.num_replicas * self.accumulation
        self._batches_per_rank = math.ceil(total / group) * self.accumulation

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def __len__(self) -> int:
        """Batches this rank gets per epoch (the same every epoch)."""
        return self._batches_per_rank

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of `epoch`, in order, before splitting across ranks."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        batches: list[list[int]] = []
        for bucket in self.buckets:
            members = bucket[torch.randperm(len(bucket), generator=generator).numpy()]
            batches.extend(members[i : i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size))
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        needed = self._batches_per_rank * self.num_replicas
        return [batches[i % len(batches)] for i in range(needed)]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.epoch_batches(self.epoch)[self.rank :: self.num_replicas]
        skip, self.skip_batches = self.skip_batches, 0
        yield from mine[skip:]
