"""Validation metrics: `mcd_db` is `rvc-peft eval`'s MCD, and both metrics rank outputs by their distance to the
target, including an output with exactly the target's F0 but another timbre (what RVC's pitch-driven decoder
produces early in training, and what the old F0 correlation could not tell from a good conversion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import evaluate
from rvc_peft.testing import random_synthesizer, small_config
from rvc_peft.training.validation import ValidationClip, Validator, make_clip, mcd_db

RATE = 40000


class FixedOutput(nn.Module):
    """Stands in for a synthesizer: `infer` returns a prepared waveform, whatever the clip."""

    def __init__(self, audio: np.ndarray) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # convert_clip reads the device from the parameters
        self.audio = torch.from_numpy(np.asarray(audio, dtype=np.float32))

    def infer(self, phone, lengths, pitch, pitchf, sid):
        return self.audio[None, None], None, None


@pytest.fixture(scope="module")
def clip_and_outputs() -> tuple[ValidationClip, dict[str, np.ndarray]]:
    # a vowel-like target: the F0 contour of a phrase, harmonic amplitudes shaped by two formant-like bumps
    contour = np.concatenate([np.linspace(110, 150, 40), np.zeros(15), np.linspace(140, 100, 45)])
    k = np.arange(1, 41)
    envelope = [float(a) for a in np.exp(-((k * 125 - 700) / 250.0) ** 2) + 0.5 * np.exp(-((k * 125 - 2200) / 400.0) ** 2)
                + 0.02]
    target, f0 = voiced_signal(contour, 1.0, sample_rate=RATE, harmonics=envelope, seed=1, vibrato_semitones=0.0)
    frames = len(target) // (RATE // 100)
    config = small_config(sampling_rate=RATE)
    clip = ValidationClip(row=0, phone=torch.zeros(1, frames, config.content_dim),
                          pitch=torch.zeros(1, frames, dtype=torch.long), pitchf=torch.from_numpy(f0[None, :frames]),
                          sid=torch.zeros(1, dtype=torch.long), target=target)
    rng = np.random.default_rng(0)
    # the same F0 track and phases (so an F0 tracker finds identical pitch) through another spectral envelope
    buzz, _ = voiced_signal(contour, 1.0, sample_rate=RATE, harmonics=40, seed=1, vibrato_semitones=0.0)
    outputs = {
        "perfect": target,
        "slightly noisy": target + (0.002 * rng.standard_normal(len(target))).astype(np.float32),
        "right F0, wrong timbre": buzz,
        "untrained (noise)": (0.2 * rng.standard_normal(len(target))).astype(np.float32),
    }
    return clip, outputs


def _scores(clip, outputs):
    validator = Validator([clip], small_config(sampling_rate=RATE))
    return {name: validator.run(FixedOutput(audio))[0] for name, audio in outputs.items()}


def test_metrics_rank_outputs_by_their_distance_to_the_target(clip_and_outputs):
    clip, outputs = clip_and_outputs
    scores = _scores(clip, outputs)
    assert set(scores["perfect"]) == {"mel_l1", "mcd_db"}
    for metric in ("mel_l1", "mcd_db"):
        ranked = [scores[name][metric] for name in outputs]  # best to worst, in the fixture's order
        assert ranked[0] == pytest.approx(0.0, abs=1e-6)
        assert ranked == sorted(ranked) and len(set(np.round(ranked, 6))) == len(ranked), (metric, ranked)
    # a pitch-perfect output with the wrong timbre is far from the target on the MCD scale, not a near miss
    assert scores["right F0, wrong timbre"]["mcd_db"] > 5.0
    assert scores["slightly noisy"]["mcd_db"] < 2.0


def test_mcd_db_is_rvc_peft_evals_mcd_frame_by_frame(clip_and_outputs):
    clip, outputs = clip_and_outputs
    for audio in outputs.values():
        expected = evaluate((audio, RATE), (clip.target, RATE), align="none")["mcd_db"]
        assert mcd_db(audio, clip.target, RATE) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_a_diverged_model_gives_nan_instead_of_failing(clip_and_outputs):
    clip, outputs = clip_and_outputs
    broken = outputs["perfect"].copy()
    broken[100:200] = np.nan
    metrics, audio = Validator([clip], small_config(sampling_rate=RATE)).run(FixedOutput(broken))
    assert math.isnan(metrics["mcd_db"]) and math.isnan(metrics["mel_l1"]) and len(audio) == 1


def test_a_real_synthesizer_is_scored_and_damage_moves_both_metrics(tmp_path):
    from rvc_peft.data import load_rvc_dataset

    from .utils import make_synthetic_dataset

    config = small_config()
    dataset, _ = load_rvc_dataset(make_synthetic_dataset(tmp_path / "data", config, n_rows=2, seconds=0.5))
    rows = dataset.with_format("numpy")
    validator = Validator([make_clip(i, rows[i], config) for i in range(2)], config)
    model = random_synthesizer(config, seed=0)
    first, outputs = validator.run(model)
    again, _ = validator.run(model)
    assert first == again and all(math.isfinite(v) for v in first.values())  # seeded: repeatable
    assert [len(a) for a in outputs] == [len(c.target) for c in validator.clips]
    with torch.no_grad():  # scale the decoder's last layer: louder, harsher output, further from the target
        for name, parameter in model.named_parameters():
            if name.startswith("dec.conv_post"):
                parameter.mul_(4.0)
    damaged, _ = validator.run(model)
    assert damaged["mcd_db"] != pytest.approx(first["mcd_db"], abs=1e-3)
    assert damaged["mel_l1"] != pytest.approx(first["mel_l1"], abs=1e-3)
