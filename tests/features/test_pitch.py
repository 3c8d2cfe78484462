"""F0 extraction: accuracy on synthetic voiced WAV files with known F0, espeak-ng speech, RVC post-processing."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import parselmouth
import pytest
import soundfile as sf
import torch
from scipy.signal import medfilt

from rvc_peft.features import pitch
from rvc_peft.features.pitch import F0_METHODS, PitchError, extract_f0, f0_to_coarse, interpolate_unvoiced
from rvc_peft.features.synthetic import espeak_speech, voiced_signal

GAP = (0.5, 0.7)  # seconds of the synthetic clip with the tone off


def _stable_frames(truth: np.ndarray, margin: int = 3) -> np.ndarray:
    """Frames more than ``margin`` frames from a voicing change or a clip end (ambiguous for every tracker)."""
    voiced = np.r_[False, truth > 0, False]
    change = np.flatnonzero(np.diff(voiced.astype(int))) - 0.5
    return np.all(np.abs(np.arange(len(truth))[:, None] - change[None, :]) > margin, axis=1)


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """A 1.2 s, 180 Hz harmonic tone with +-0.5 semitone vibrato and a gap, written to and read from a WAV file."""
    audio, truth = voiced_signal(180.0, 1.2, unvoiced_gaps=[GAP])
    path = tmp_path_factory.mktemp("pitch") / "tone_180hz.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    read, sample_rate = sf.read(path, dtype="float32")
    assert sample_rate == 16000
    return read, truth


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory) -> np.ndarray:
    path = espeak_speech("Hello there, how are you today?",
                         tmp_path_factory.mktemp("speech") / "hello.wav", pitch=50, sample_rate=16000)
    if path is None:
        pytest.skip("espeak-ng is not installed")
    audio, sample_rate = sf.read(path, dtype="float32")
    assert sample_rate == 16000
    return audio


# crepe "full" is kept out of unit tests (about 3 s per second of audio on 2 cores); see benchmarks/bench_f0.py
# crepe's RVC voicing rule (periodicity >= 0.1, no silence gate) calls part of the -50 dB noise gap voiced
@pytest.mark.parametrize("method,max_median_cents,max_gap_voiced", [
    ("harvest", 20, 0.2), ("dio", 20, 0.2), ("pm", 20, 0.2), ("crepe-tiny", 50, 0.6), ("fcpe", 50, 0.2)])
def test_accuracy_on_synthetic_voiced_wav(synthetic_clip, method, max_median_cents, max_gap_voiced):
    audio, truth = synthetic_clip
    f0 = extract_f0(audio, method)
    assert f0.dtype == np.float32 and f0.shape == (len(audio) // 160,) == truth.shape
    stable = _stable_frames(truth)
    voiced_truth = (truth > 0) & stable
    both = voiced_truth & (f0 > 0)
    assert both.sum() >= 0.9 * voiced_truth.sum(), f"{method} missed voiced frames"
    cents = np.abs(1200 * np.log2(f0[both] / truth[both]))
    assert np.median(cents) < max_median_cents
    assert np.mean(cents > 50) < 0.05  # gross pitch errors
    gap = (truth == 0) & stable
    assert np.mean(f0[gap] > 0) < max_gap_voiced, f"{method} called the noise gap voiced"


@pytest.mark.parametrize("method", ["harvest", "dio", "crepe-tiny", "fcpe"])
def test_end_aligned_methods_trim_and_pad_at_the_end(synthetic_clip, method):
    audio = synthetic_clip[0][:6000]  # 0.375 s: frame bookkeeping does not need a long clip
    n = len(audio) // 160
    default = extract_f0(audio, method)
    longer = extract_f0(audio, method, p_len=n + 7)
    shorter = extract_f0(audio, method, p_len=n - 10)
    assert longer.shape == (n + 7,) and shorter.shape == (n - 10,)
    np.testing.assert_array_equal(longer[:n], default)
    np.testing.assert_array_equal(longer[n + 1:], 0)  # native length is n + 1; the rest is zero padding
    np.testing.assert_array_equal(shorter, default[: n - 10])


def test_pm_is_padded_symmetrically_like_rvc(synthetic_clip):
    audio, _ = synthetic_clip
    native = parselmouth.Sound(audio.astype(np.float64), 16000).to_pitch_ac(
        time_step=0.01, voicing_threshold=0.6, pitch_floor=50, pitch_ceiling=1100).selected_array["frequency"]
    for p_len in (len(audio) // 160, len(audio) // 160 + 9, len(native) - 4):
        f0 = extract_f0(audio, "pm", p_len=p_len)
        left = max((p_len - len(native) + 1) // 2, 0)
        expected = np.zeros(p_len)
        kept = min(len(native), p_len - left)
        expected[left:left + kept] = native[:kept]
        np.testing.assert_allclose(f0, expected, rtol=1e-6)
        assert f0.shape == (p_len,)


def test_key_shift_multiplies_by_two_to_the_k_over_12(synthetic_clip):
    audio, _ = synthetic_clip
    base = extract_f0(audio, "dio")
    np.testing.assert_allclose(extract_f0(audio, "dio", f0_up_key=12), 2 * base, rtol=1e-6)
    np.testing.assert_allclose(extract_f0(audio, "dio", f0_up_key=-5), base * 2 ** (-5 / 12), rtol=1e-6)
    assert (extract_f0(audio, "dio", f0_up_key=7) == 0).sum() == (base == 0).sum()


def test_harvest_median_filter_is_a_width_3_switch(synthetic_clip):
    audio = synthetic_clip[0][:9600]  # 0.6 s, includes the start of the gap
    raw = extract_f0(audio, "harvest", filter_radius=0)
    np.testing.assert_array_equal(extract_f0(audio, "harvest", filter_radius=2), raw)
    filtered = extract_f0(audio, "harvest", filter_radius=7)  # any radius > 2 means width 3 in RVC
    # the filter runs on the native n + 1 frames before trimming, so the last output frame may differ
    np.testing.assert_array_equal(filtered[:-1], medfilt(raw.astype(np.float64), 3).astype(np.float32)[:-1])
    assert not np.array_equal(filtered, raw)


def test_accepts_a_torch_tensor(synthetic_clip):
    audio, _ = synthetic_clip
    np.testing.assert_array_equal(extract_f0(torch.from_numpy(audio), "dio"), extract_f0(audio, "dio"))


def test_espeak_speech_is_plausible(speech_16k):
    reference = extract_f0(speech_16k, "harvest")
    for method in ("dio", "pm", "harvest", "fcpe"):
        f0 = extract_f0(speech_16k, method)
        voiced = f0 > 0
        assert 0.4 < voiced.mean() < 0.95, method
        assert 70 < np.median(f0[voiced]) < 160, method  # espeak en-us at pitch 50 speaks around 100 Hz
        both = voiced & (reference > 0)
        assert np.median(np.abs(1200 * np.log2(f0[both] / reference[both]))) < 50, method


def test_espeak_pitch_setting_moves_f0(tmp_path):
    medians = []
    for setting in (20, 80):
        path = espeak_speech("Hello there.", tmp_path / f"p{setting}.wav", pitch=setting,
                             sample_rate=16000)
        if path is None:
            pytest.skip("espeak-ng is not installed")
        f0 = extract_f0(sf.read(path, dtype="float32")[0], "dio")
        medians.append(np.median(f0[f0 > 0]))
    assert medians[1] > 1.3 * medians[0]


def test_espeak_speech_returns_none_without_espeak(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert espeak_speech("hello", tmp_path / "x.wav") is None
    assert not (tmp_path / "x.wav").exists()


def test_voiced_signal_truth_and_spectrum():
    contour = np.r_[np.full(50, 200.0), np.zeros(30), np.full(50, 300.0)]
    audio, truth = voiced_signal(contour, 1.3, vibrato_semitones=0.0, noise_level=0.0)
    assert audio.shape == (20800,) and truth.shape == (130,)
    np.testing.assert_array_equal(truth, contour.astype(np.float32))
    # the strongest spectral peak of each voiced stretch sits at its F0 (1/k harmonic amplitudes)
    for start, end, f0 in ((0, 8000, 200.0), (8000 + 800, 20800, 300.0)):
        segment = audio[start:end] * np.hanning(end - start)
        freqs = np.fft.rfftfreq(end - start, 1 / 16000)
        assert abs(freqs[np.argmax(np.abs(np.fft.rfft(segment)))] - f0) < 3
    assert np.abs(audio[int(0.6 * 16000):int(0.75 * 16000)]).max() < 1e-6  # silent gap (no noise requested)
    _, truth_gap = voiced_signal(150.0, 1.0, unvoiced_gaps=[(0.2, 0.4)], vibrato_semitones=1.0)
    assert np.all(truth_gap[20:40] == 0) and np.all(truth_gap[:20] > 0) and np.all(truth_gap[40:] > 0)
    voiced = truth_gap[truth_gap > 0]
    assert voiced.min() >= 150 * 2 ** (-1 / 12) - 1e-3 and voiced.max() <= 150 * 2 ** (1 / 12) + 1e-3


def test_f0_to_coarse_hand_computed():
    # mel(f) = 1127 ln(1 + f/700); mel(50) = 77.755, mel(1100) = 1064.408
    # 200 Hz: mel 283.231 -> (283.231 - 77.755) * 254 / 986.653 + 1 = 53.897 -> 54
    # 100 Hz: mel 150.490 -> 19.725 -> 20;  440 Hz: 549.642 -> 122.481 -> 122;  55 Hz: 85.243 -> 2.928 -> 3
    f0 = np.array([0.0, 50.0, 1100.0, 2000.0, 200.0, 100.0, 440.0, 55.0, 30.0, -3.0, np.nan])
    coarse = f0_to_coarse(f0)
    assert coarse.dtype == np.int64
    np.testing.assert_array_equal(coarse, [1, 1, 255, 255, 54, 20, 122, 3, 1, 1, 1])


def test_interpolate_unvoiced():
    np.testing.assert_allclose(interpolate_unvoiced(np.array([0, 100, 0, 0, 160, 0], np.float32)),
                               [100, 100, 120, 140, 160, 160])
    zeros = np.zeros(4, np.float32)
    np.testing.assert_array_equal(interpolate_unvoiced(zeros), zeros)
    original = np.array([0, 100, 0], np.float32)
    interpolate_unvoiced(original)
    np.testing.assert_array_equal(original, [0, 100, 0])  # input left untouched


def test_unknown_method_lists_known_ones():
    with pytest.raises(PitchError) as info:
        extract_f0(np.zeros(1600, np.float32), "yin")
    assert str(info.value) == ("unknown f0 method 'yin'; known methods: "
                               "rmvpe, crepe, crepe-tiny, fcpe, harvest, dio, pm")
    assert F0_METHODS == ("rmvpe", "crepe", "crepe-tiny", "fcpe", "harvest", "dio", "pm")


@pytest.mark.parametrize("method,module", [("harvest", "pyworld"), ("dio", "pyworld"), ("pm", "parselmouth"),
                                           ("crepe-tiny", "torchcrepe"), ("fcpe", "torchfcpe")])
def test_missing_extra_names_the_install_command(monkeypatch, method, module):
    monkeypatch.setattr(pitch, "_MODEL_CACHE", {})
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` raise ImportError
    with pytest.raises(PitchError, match=rf"'{module}'.*pip install \"rvc-peft\[pitch\]\"") as info:
        extract_f0(np.zeros(3200, np.float32), method)
    # the extra pulls in torchaudio, a CUDA build on PyPI for Linux: the hint says how to make it importable
    spec = importlib.util.find_spec("torchaudio")
    libraries = (os.path.join(os.path.dirname(spec.origin), "lib", "*.so") if spec
                 else "<site-packages>/torchaudio/lib/*.so")
    assert f"rm {libraries}" in str(info.value) and "scripts/setup.sh" in str(info.value)


def test_broken_torchaudio_under_torchcrepe_is_reported(monkeypatch):
    real_import = pitch.importlib.import_module

    def import_module(name, *args, **kwargs):
        if name == "torchcrepe":  # what a CUDA-linked torchaudio raises when torchcrepe imports it
            raise OSError("libc10_cuda.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(pitch.importlib, "import_module", import_module)
    with pytest.raises(PitchError, match=r"'torchcrepe'.*OSError: libc10_cuda\.so.*it is torchaudio \(imported "
                                         r"by torchcrepe\).*CUDA builds.*rm \S*torchaudio/lib/\*\.so"
                                         r".*scripts/setup\.sh") as info:
        extract_f0(np.zeros(3200, np.float32), "crepe-tiny")
    assert "pip install" not in str(info.value)  # installed but broken: reinstalling would not help


def test_bad_input_is_rejected_clearly():
    with pytest.raises(PitchError, match="shape \\[2, 1600\\]"):
        extract_f0(np.zeros((2, 1600), np.float32), "dio")
    with pytest.raises(PitchError, match="empty"):
        extract_f0(np.zeros(0, np.float32), "dio")
    with pytest.raises(PitchError, match="NaN"):
        extract_f0(np.full(1600, np.nan, np.float32), "dio")
    with pytest.raises(PitchError, match="no voicing threshold"):
        extract_f0(np.zeros(1600, np.float32), "harvest", threshold=0.1)
    with pytest.raises(PitchError, match="'pm' cannot analyze 500 samples"):
        extract_f0(np.zeros(500, np.float32), "pm")


def test_threshold_override_changes_voicing(synthetic_clip):
    audio, _ = synthetic_clip
    assert (extract_f0(audio, "pm", threshold=0.99) > 0).sum() < (extract_f0(audio, "pm") > 0).sum()
