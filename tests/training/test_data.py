"""Training items, batches and the deterministic rank-aware sampler."""

import numpy as np
import pytest
import torch

from rvc_peft.features.spectrogram import linear_spectrogram
from rvc_peft.testing import small_config
from rvc_peft.training.data import LengthBucketBatchSampler, RVCTrainingDataset, collate_batch, prepare_item


def _row(config, audio_seconds: float, phone_frames: int, pitch_frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "audio": rng.standard_normal(int(audio_seconds * config.sampling_rate)).astype(np.float32) * 0.1,
        "phone": rng.standard_normal((phone_frames, config.content_dim)).astype(np.float32),
        "pitch": rng.integers(1, 256, pitch_frames), "pitchf": rng.uniform(80, 300, pitch_frames).astype(np.float32),
        "speaker_id": 3,
    }


def test_item_repeats_features_and_cuts_every_stream_to_the_shortest_like_rvc():
    config = small_config()
    hop = config.hop_length
    row = _row(config, 0.50, phone_frames=24, pitch_frames=51)  # 48 feature frames at 100 fps, 50 spec frames
    item = prepare_item(row, config)
    assert item["phone"].shape == (48, config.content_dim)
    assert torch.equal(item["phone"][0::2], torch.from_numpy(row["phone"]))
    assert torch.equal(item["phone"][1::2], torch.from_numpy(row["phone"]))
    spec = linear_spectrogram(torch.from_numpy(row["audio"]), config.filter_length, hop, config.win_length)
    assert spec.shape[-1] == 50
    assert torch.equal(item["spec"], spec[:, :48])
    assert torch.equal(item["wave"], torch.from_numpy(row["audio"][: 48 * hop]))
    assert torch.equal(item["pitch"], torch.from_numpy(row["pitch"][:48]))
    assert item["pitchf"].dtype == torch.float32 and item["speaker_id"] == 3


def test_item_is_capped_at_900_frames():
    config = small_config(sampling_rate=32000)
    item = prepare_item(_row(config, 10.0, phone_frames=499, pitch_frames=1001), config)
    assert item["phone"].shape[0] == item["spec"].shape[-1] == item["pitch"].shape[0] == 900
    assert item["wave"].shape[0] == 900 * config.hop_length


def test_no_pitch_item_and_collate_pads_and_sorts_longest_first():
    config = small_config(use_f0=False)
    rows = [_row(config, seconds, phone_frames=int(seconds * 50), pitch_frames=0, seed=i)
            for i, seconds in enumerate([0.3, 0.5, 0.4])]
    for row in rows:
        del row["pitch"], row["pitchf"]
    items = [prepare_item(row, config) for row in rows]
    assert "pitch" not in items[0]
    batch = collate_batch(items)
    assert batch["spec_lengths"].tolist() == [50, 40, 30]
    assert batch["phone"].shape == (3, 50, config.content_dim) and batch["spec"].shape[-1] == 50
    assert torch.equal(batch["phone"][2, :30], items[0]["phone"]) and batch["phone"][2, 30:].abs().sum() == 0
    assert batch["wave"].shape == (3, 1, 50 * config.hop_length)
    assert "wave_lengths" not in batch  # the valid wave length is spec_lengths · hop
    assert "pitch" not in batch


def test_dataset_frames_are_read_from_arrow_without_decoding(tmp_path):
    from rvc_peft.data import load_rvc_dataset

    from .utils import make_synthetic_dataset

    config = small_config()
    make_synthetic_dataset(tmp_path / "data", config, n_rows=3, seconds=0.5)
    dataset, _ = load_rvc_dataset(tmp_path / "data")
    view = RVCTrainingDataset(dataset, config, indices=[2, 0])
    assert len(view) == 2
    assert view.frames.tolist() == [prepare_item(dataset[i], config)["spec"].shape[-1] for i in (2, 0)]
    assert torch.equal(view[0]["phone"], prepare_item(dataset[2], config)["phone"])


def _epoch(sampler, epoch, skip=0):
    sampler.set_epoch(epoch, skip_batches=skip)
    return list(sampler)


def test_sampler_is_deterministic_per_epoch_and_buckets_similar_lengths():
    lengths = [120, 130, 450, 460, 125, 455, 135, 470, 140, 480]
    sampler = LengthBucketBatchSampler(lengths, batch_size=2, seed=7)
    first = _epoch(sampler, 0)
    assert first == _epoch(LengthBucketBatchSampler(lengths, batch_size=2, seed=7), 0)
    assert first != _epoch(sampler, 1)
    assert sorted(i for batch in first for i in batch) == list(range(10))
    for batch in first:  # every batch comes from one 100-frame bucket
        assert len({lengths[i] // 100 for i in batch}) == 1
    assert len(sampler) == len(first) == 6  # 5 short items -> 3 batches, 5 long -> 3 batches


def test_sampler_splits_across_ranks_evenly_and_skips_batches_on_resume():
    lengths = list(range(100, 170, 10))  # 7 items
    ranks = [LengthBucketBatchSampler(lengths, batch_size=2, num_replicas=2, rank=r, seed=3,
                                      gradient_accumulation_steps=2, bucket_width=None) for r in range(2)]
    per_rank = [_epoch(s, 4) for s in ranks]
    # 4 batches in total, topped up to a multiple of replicas x accumulation = 4: 2 per rank
    assert [len(b) for b in per_rank] == [2, 2] and all(len(s) == 2 for s in ranks)
    everything = ranks[0].epoch_batches(4)
    assert per_rank[0] == everything[0::2] and per_rank[1] == everything[1::2]
    assert _epoch(ranks[1], 4, skip=1) == per_rank[1][1:]
    assert _epoch(ranks[1], 4) == per_rank[1]  # the skip applies to one iteration only


def test_sampler_tops_up_tiny_datasets_by_wrapping_around():
    sampler = LengthBucketBatchSampler([100, 110, 120], batch_size=2, num_replicas=2, rank=1,
                                       gradient_accumulation_steps=3)
    batches = _epoch(sampler, 0)
    assert len(batches) == len(sampler) == 3
    with pytest.raises(ValueError, match="no training items"):
        LengthBucketBatchSampler([], batch_size=2)
