"""RVC's windowing: high-pass, quiet-point split search and segment plan, checked against direct transcriptions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from rvc_peft.inference.segmentation import (
    WINDOW,
    WindowConfig,
    find_split_points,
    highpass,
    plan_segments,
    window_energy,
)


def rvc_split_points(audio: np.ndarray, window: WindowConfig) -> list[int]:
    """Spec §4.3 step 3 written out literally: 160 shifted |slices| summed, first minimum per search window."""
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2), mode="reflect")
    points = []
    if len(padded) > window.t_max:
        energy = np.zeros_like(audio)
        for i in range(WINDOW):
            energy += np.abs(padded[i : i - WINDOW])
        for t in range(window.t_center, len(audio), window.t_center):
            part = energy[t - window.t_query : t + window.t_query]
            points.append(t - window.t_query + int(np.where(part == part.min())[0][0]))
    return points


def test_window_constants_match_rvc():
    assert (WindowConfig.fp32().t_pad, WindowConfig.fp32().t_query, WindowConfig.fp32().t_center,
            WindowConfig.fp32().t_max) == (16000, 96000, 608000, 656000)
    assert (WindowConfig.fp16().x_pad, WindowConfig.fp16().x_query, WindowConfig.fp16().x_center,
            WindowConfig.fp16().x_max) == (3, 10, 60, 65)
    assert WindowConfig.low_memory() == WindowConfig(1, 5, 30, 32)
    assert WindowConfig() == WindowConfig.fp32()
    with pytest.raises(ValueError, match="x_pad must be a positive multiple of 0.01"):
        WindowConfig(x_pad=0.005)
    with pytest.raises(ValueError, match="at most half of x_center"):
        WindowConfig(x_pad=1, x_query=20, x_center=38, x_max=41)


def test_highpass_is_rvc_filtfilt():
    audio = np.random.default_rng(0).standard_normal(16000)
    b, a = signal.butter(N=5, Wn=48, btype="high", fs=16000)
    np.testing.assert_array_equal(highpass(audio), signal.filtfilt(b, a, audio))
    # 48 Hz cut: a 20 Hz tone is strongly attenuated, a 200 Hz tone passes
    t = np.arange(32000) / 16000
    assert np.std(highpass(np.sin(2 * np.pi * 20 * t))[4000:-4000]) < 0.02
    assert abs(np.std(highpass(np.sin(2 * np.pi * 200 * t))[4000:-4000]) - np.std(np.sin(2 * np.pi * 200 * t))) < 0.01


def test_split_points_equal_literal_rvc():
    rng = np.random.default_rng(1)
    window = WindowConfig(x_pad=0.5, x_query=1.0, x_center=4.0, x_max=5.0)
    audio = rng.standard_normal(16000 * 21) * np.repeat(rng.uniform(0.05, 1.0, 21 * 20), 800)
    audio[16000 * 8 + 5000 : 16000 * 8 + 5600] *= 1e-3  # a quiet spot inside the second search window
    ours = find_split_points(audio, window)
    assert ours == rvc_split_points(audio, window)
    assert len(ours) == 5  # t = 4, 8, 12, 16, 20 s
    assert 16000 * 8 + 5000 - WINDOW <= ours[1] <= 16000 * 8 + 5600
    # energy helper equals the literal sum on any sub-range
    literal = np.zeros(len(audio))
    padded = np.pad(audio, (80, 80), mode="reflect")
    for i in range(WINDOW):
        literal += np.abs(padded[i : i - WINDOW])
    np.testing.assert_array_equal(window_energy(audio, 1000, 5000), literal[1000:5000])


def test_no_split_below_t_max():
    window = WindowConfig.fp32()
    assert find_split_points(np.ones(window.t_max - WINDOW), window) == []
    assert find_split_points(np.ones(window.t_max - WINDOW + 1), window) != []


@pytest.mark.parametrize("rvc_trim", [False, True])
def test_segment_plan_covers_the_audio_contiguously(rvc_trim):
    window = WindowConfig.fp32()
    points = [608123, 1216000 + 333, 1823999]
    segments = plan_segments(points, window, rvc_trim=rvc_trim)
    assert len(segments) == 4
    starts = [0] + [p // WINDOW * WINDOW for p in points]
    for seg, start, stop in zip(segments, starts, starts[1:] + [None]):
        assert seg.start == start and seg.pitch_start == start // WINDOW
        if stop is None:
            assert seg.stop is None and seg.pitch_stop is None and seg.keep_frames is None
        else:
            # audio_pad[s : t + t_pad2 + window], pitch[s // 160 : (t + t_pad2) // 160] (spec §4.3 step 6)
            assert seg.stop == stop + 2 * window.t_pad + WINDOW
            assert seg.pitch_stop == (stop + 2 * window.t_pad) // WINDOW
            assert seg.keep_frames == (None if rvc_trim else (stop - start) // WINDOW)


def test_ten_minutes_of_audio_split_at_its_quiet_points():
    """Full-length segmentation of 10 minutes (fp32 constants): every cut lands in a planted quiet gap."""
    window = WindowConfig.fp32()
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal(16000 * 600)).astype(np.float32)
    gaps = []
    for k in range(1, 16):  # t_center multiples below 600 s: 38, 76, ..., 570 s
        start = k * window.t_center + int(rng.integers(-80000, 80000))
        audio[start : start + 800] *= 1e-4
        gaps.append(start)
    points = find_split_points(audio, window)
    assert len(points) == 15
    for point, gap in zip(points, gaps):
        assert gap - WINDOW <= point <= gap + 800
