"""RVC's piece arithmetic, high-pass and normalisation, and the whole per-file slicing on constructed audio."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal

from rvc_peft.data.cutting import (
    cut_training_pieces,
    highpass,
    normalize_piece,
    segment_bounds,
    slice_for_training,
)
from rvc_peft.data.preprocess import speaker_for
from rvc_peft.data.slicer import Slicer

SR = 40000


@pytest.mark.parametrize("seconds, per, expected", [
    # at most per + 0.3 s: one piece
    (2.0, 3.7, [(0, 80000)]),
    (4.0, 3.7, [(0, 160000)]),
    # just over 4.0 s: a 3.7 s piece, then the rest from 3.4 s
    (4.0 + 1 / SR, 3.7, [(0, 148000), (136000, 160001)]),
    (10.0, 3.7, [(0, 148000), (136000, 284000), (272000, 400000)]),
    # RVC's fp32 setting: 3.0 s pieces every 2.7 s, tail up to 3.3 s
    (3.3, 3.0, [(0, 132000)]),
    (9.0, 3.0, [(0, 120000), (108000, 228000), (216000, 336000), (324000, 360000)]),
])
def test_segment_bounds(seconds, per, expected):
    assert segment_bounds(round(seconds * SR), SR, per) == expected


@pytest.mark.parametrize("length", [1, 1500, 24000, 160000, 160001, 400000, 1234567])
@pytest.mark.parametrize("sr", [32000, 48000])
def test_segment_bounds_properties(length, sr):
    bounds = segment_bounds(length, sr)
    step, piece = int(sr * 3.4), int(sr * 3.7)
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert [a for a, _ in bounds] == [int(sr * 3.4 * k) for k in range(len(bounds))]
    assert all(b - a == piece for a, b in bounds[:-1])  # full pieces overlap the next by 0.3 s
    last = bounds[-1][1] - bounds[-1][0]
    assert last <= 4.0 * sr and (len(bounds) == 1 or last > 0.6 * sr - 1)
    assert all(abs((b1 - a2) - 0.3 * sr) <= 1 for (_, b1), (a2, _) in itertools.pairwise(bounds))
    assert all(a2 - a1 == step or a2 - a1 == step + 1 for (a1, _), (a2, _) in itertools.pairwise(bounds))


def test_normalisation_formula_and_drops():
    x = np.array([0.1, -0.4, 0.2])
    np.testing.assert_allclose(normalize_piece(x), x / 0.4 * 0.675 + 0.25 * x)
    assert np.abs(normalize_piece(x)).max() == pytest.approx(0.675 + 0.25 * 0.4)
    assert normalize_piece(np.array([0.0, 2.6])) is None  # RVC drops pieces peaking above 2.5
    assert normalize_piece(np.array([0.0, 2.5])) is not None
    assert normalize_piece(np.zeros(10)) is None  # digital silence would divide by zero


def test_highpass_is_causal_48hz_butterworth():
    b, a = signal.butter(5, 48, btype="high", fs=SR)
    t = np.arange(SR) / SR
    for hz, gain in ((10.0, 0.0), (48.0, 2 ** -0.5), (1000.0, 1.0)):
        tone = np.sin(2 * np.pi * hz * t)
        out = highpass(tone, SR)
        assert np.abs(out[SR // 2:]).max() == pytest.approx(gain, abs=0.01)  # steady-state gain
    impulse = np.zeros(1000)
    impulse[500] = 1.0
    out = highpass(impulse, SR)
    assert np.all(out[:500] == 0)  # causal: nothing before the impulse (filtfilt would ring there)
    np.testing.assert_allclose(out, signal.lfilter(b, a, impulse))


def test_slice_for_training_offsets_lengths_and_levels():
    t = np.arange(int(7.0 * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    audio = np.concatenate([tone, np.zeros(SR), tone[: int(2.0 * SR)]])
    pieces = slice_for_training(audio, SR)
    # Expected from the parts: slicer chunks, each cut by segment_bounds.
    chunks = Slicer(SR).slice_positions(highpass(audio, SR))
    assert len(chunks) == 2 and chunks[0][0] == 0 and chunks[1][0] > 7.0 * SR
    expected = [(c0 + a, b - a) for c0, c1 in chunks for a, b in segment_bounds(c1 - c0, SR)]
    assert [(round(off * SR), len(p)) for off, p in pieces] == expected
    assert len(pieces) == 4 and len(pieces[0][1]) == 148000 and pieces[1][0] == pytest.approx(3.4)
    for _, piece in pieces:
        assert piece.dtype == np.float32
        assert np.abs(piece).max() == pytest.approx(0.675 + 0.25 * 0.3, abs=0.01)
    raw = cut_training_pieces(audio, SR)
    assert [s for s, _ in raw] == [e[0] for e in expected]


def test_slice_for_training_per_3():
    audio = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(6.0 * SR)) / SR)
    pieces = slice_for_training(audio, SR, per=3.0)
    assert [(round(o * SR), len(p)) for o, p in pieces] == [(0, 120000), (108000, 132000)]


@pytest.mark.parametrize("relative, expected", [
    ("a.wav", 7), ("3/a.wav", 3), ("12/sub/a.wav", 12), ("alice/a.wav", 7), ("3", 7), ("x/3/a.wav", 7),
])
def test_speaker_rule(relative, expected):
    assert speaker_for(relative, default=7) == expected


def test_source_listing_is_sorted_and_skips_hidden_files_and_the_output_folder(tmp_path):
    from rvc_peft.data.preprocess import _list_sources

    for name in ("b.wav", "a.flac", "2/c.wav", ".hidden.wav", ".cache/x.wav", "out/work/abc.npz", "out/dataset/x"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [rel for _, rel in _list_sources(tmp_path, tmp_path / "out")] == ["2/c.wav", "a.flac", "b.wav"]


def test_source_listing_never_lists_dataset_outputs(tmp_path):
    """OUT_DIR == AUDIO_DIR, and an earlier build into another folder inside AUDIO_DIR: outputs are not recordings."""
    from rvc_peft.data.preprocess import _list_sources

    for name in ("a.wav", "rvc_dataset.json", "work/settings.json", "work/a.npz", "dataset/data-0.arrow",
                 "old_build/rvc_dataset.json", "old_build/dataset/x.arrow", "takes/work/b.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [rel for _, rel in _list_sources(tmp_path, tmp_path)] == ["a.wav", "takes/work/b.wav"]
    # in another output folder, a recording called rvc_dataset.json or a folder called work are just files
    assert "rvc_dataset.json" in [rel for _, rel in _list_sources(tmp_path, tmp_path / "out")]


def test_a_constant_file_is_reported_as_no_signal(tmp_path):
    """A DC-only recording is not "too short": the high-pass leaves a step transient the slicer cuts into a scrap."""
    import soundfile as sf

    from rvc_peft.data.preprocess import _no_slice_reason, _prepare_file, _Task
    from rvc_peft.data.work_cache import source_stamp

    for name, audio in (("dc.wav", np.full(3 * SR, 0.5, np.float32)),
                        ("dc_hum.wav", 0.5 + 1e-3 * np.sin(np.arange(3 * SR) * 0.1).astype(np.float32))):
        sf.write(tmp_path / name, audio, SR, subtype="FLOAT")
        result = _prepare_file(_Task(str(tmp_path / name), name, source_stamp(tmp_path / name), SR, 3.7, None))
        assert result.error is None and result.pieces == []
        assert _no_slice_reason(result) == ("no signal: the file is constant (DC only, level +0.500 for 3.00 s, "
                                            "nothing above -42 dB around it)")
    # a tone riding on the same offset is a recording
    tone = 0.5 + 0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR)
    sf.write(tmp_path / "tone.wav", tone.astype(np.float32), SR, subtype="FLOAT")
    result = _prepare_file(_Task(str(tmp_path / "tone.wav"), "tone.wav", source_stamp(tmp_path / "tone.wav"), SR,
                                 3.7, None))
    assert result.constant is None and len(result.pieces) == 1
