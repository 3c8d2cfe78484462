"""Evaluation metrics against signals with known answers, the DTW against a plain dynamic program, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import EvaluationError, evaluate
from rvc_peft.inference.batch import evaluate_paths
from rvc_peft.inference.evaluation import dtw


def plain_dtw(cost: np.ndarray) -> float:
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return acc[n, m]


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (9, 14), (30, 21)])
def test_dtw_equals_plain_dynamic_programming(shape):
    cost = np.random.default_rng(sum(shape)).random(shape)
    total, path = dtw(cost)
    assert np.isclose(total, plain_dtw(cost))
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (shape[0] - 1, shape[1] - 1)
    steps = np.diff(path, axis=0)
    assert {tuple(s) for s in steps} <= {(1, 1), (0, 1), (1, 0)}
    assert np.isclose(cost[path[:, 0], path[:, 1]].sum(), total)  # the path is the one that costs `total`


def test_identical_signals_score_perfectly():
    audio, _ = voiced_signal(180.0, 1.5, seed=1)
    result = evaluate((audio, 16000), (audio, 16000))
    assert result["mcd_db"] == pytest.approx(0.0, abs=1e-9)
    assert result["spectral_convergence"] == pytest.approx(0.0, abs=1e-9)
    assert result["f0_rmse_cents"] == 0.0 and result["f0_corr"] == pytest.approx(1.0)
    assert result["vuv_error_rate"] == 0.0 and result["aligned_pairs"] == result["reference_frames"] == 151


def test_a_semitone_up_is_100_cents_and_gain_only_moves_c0():
    reference, _ = voiced_signal(180.0, 1.5, seed=1)
    shifted, _ = voiced_signal(180.0 * 2 ** (1 / 12), 1.5, seed=1)
    result = evaluate((shifted, 16000), (reference, 16000), align="none")
    assert result["f0_rmse_cents"] == pytest.approx(100.0, abs=3.0)
    assert result["f0_corr"] > 0.99  # the same vibrato, transposed
    assert result["mcd_db"] > 1.0
    louder = evaluate((2.0 * reference, 16000), (reference, 16000), align="none")
    assert louder["spectral_convergence"] == pytest.approx(1.0, abs=1e-6)  # ‖2S − S‖ / ‖S‖
    assert louder["mcd_db"] == pytest.approx(0.0, abs=1e-6)  # c0 (energy) is not part of MCD


def test_voicing_errors_are_counted():
    reference, _ = voiced_signal(160.0, 2.0, seed=2, unvoiced_gaps=[(0.5, 1.0)], noise_level=0.001)
    converted, _ = voiced_signal(160.0, 2.0, seed=2, noise_level=0.001)
    result = evaluate((converted, 16000), (reference, 16000), align="none")
    assert result["vuv_error_rate"] == pytest.approx(0.25, abs=0.03)  # half a second of 2 s


def test_dtw_aligns_a_delayed_copy():
    reference, _ = voiced_signal(200.0, 1.5, seed=3, unvoiced_gaps=[(0.6, 0.8)])
    delayed = np.concatenate([np.zeros(3200, dtype=np.float32), reference])  # 0.2 s later
    aligned = evaluate((delayed, 16000), (reference, 16000))
    frame_by_frame = evaluate((delayed, 16000), (reference, 16000), align="none")
    assert aligned["mcd_db"] < 0.5 * frame_by_frame["mcd_db"]
    assert aligned["vuv_error_rate"] < frame_by_frame["vuv_error_rate"]


def test_json_and_figure_for_files_and_folders(tmp_path):
    for folder, seed in (("conv", 4), ("ref", 5)):
        (tmp_path / folder / "sub").mkdir(parents=True)
        for name in ("a", "sub/b"):
            audio, _ = voiced_signal(150.0 + seed, 0.8, seed=seed)
            sf.write(tmp_path / folder / f"{name}.wav", audio, 16000, subtype="FLOAT")
    sf.write(tmp_path / "conv" / "extra.wav", np.zeros(16000, dtype=np.float32), 16000)
    single = evaluate_paths(tmp_path / "conv" / "a.wav", tmp_path / "ref" / "a.wav", json_path=tmp_path / "a.json",
                            figure=tmp_path / "a.png")
    assert json.loads((tmp_path / "a.json").read_text())["mcd_db"] == pytest.approx(single["mcd_db"])
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = evaluate_paths(tmp_path / "conv", tmp_path / "ref", json_path=tmp_path / "all.json",
                          figure=tmp_path / "figures", progress=False)
    assert [p["converted"].endswith(n) for p, n in zip(both["pairs"], ("a.wav", "b.wav"))] == [True, True]
    assert both["unpaired_converted"][0].endswith("extra.wav") and both["unpaired_reference"] == []
    assert both["mean"]["mcd_db"] == pytest.approx(np.mean([p["mcd_db"] for p in both["pairs"]]))
    assert sorted(p.name for p in (tmp_path / "figures").rglob("*.png")) == ["a.png", "b.png"]


def test_bad_evaluation_inputs(tmp_path):
    audio, _ = voiced_signal(150.0, 0.5)
    sf.write(tmp_path / "ok.wav", audio, 16000)
    (tmp_path / "junk.wav").write_text("no audio here")
    with pytest.raises(EvaluationError, match=r"junk\.wav"):
        evaluate(tmp_path / "junk.wav", tmp_path / "ok.wav")
    with pytest.raises(EvaluationError, match="too short to analyze"):
        evaluate((audio[:100], 16000), tmp_path / "ok.wav")
    with pytest.raises(EvaluationError, match="compare two files or two folders"):
        evaluate_paths(tmp_path / "ok.wav", tmp_path)
    with pytest.raises(EvaluationError, match="needs its sample rate"):
        evaluate(audio, tmp_path / "ok.wav")


def test_log_mel_distance_db_reads_level_differences_in_db():
    from rvc_peft.inference.evaluation import log_mel_distance_db

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(40000)).astype(np.float32)  # broadband: every mel band well above the floor
    assert log_mel_distance_db(audio, audio, 40000) == 0.0
    # twice the amplitude is +20·log10(2) = 6.02 dB in every band of a magnitude spectrogram
    assert abs(log_mel_distance_db(2 * audio, audio, 40000) - 20 * np.log10(2)) < 0.05
    assert log_mel_distance_db(audio, (0.1 * rng.standard_normal(40000)).astype(np.float32), 40000) > 1.0
