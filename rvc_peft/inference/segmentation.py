"""RVC's audio windowing for conversion: high-pass, quiet-point split search, reflect padding, segment plan.

Everything here runs at 16 kHz on numpy arrays and follows RVC WebUI's `Pipeline.pipeline` (spec §4.3):

* a 5th-order Butterworth high-pass at 48 Hz applied forwards and backwards (`scipy.signal.filtfilt`);
* when the audio (plus 80 samples of reflect padding each side) is longer than `t_max`, split points are searched
  around every multiple of `t_center`: the first minimum of the 160-sample moving sum of |x| within `±t_query`;
* the whole file is reflect-padded by `t_pad` each side; segment i covers padded samples
  `[s_i, t_i + 2·t_pad + 160)` with its pitch frames `[s_i // 160, (t_i + 2·t_pad) // 160)`; the last segment runs to
  the end of the padded audio.

Times are in samples at 16 kHz unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000  # content encoder and pitch input rate
WINDOW = 160  # samples per pitch frame (10 ms); also the width of the split-point energy window
HIGHPASS_HZ = 48
HIGHPASS_ORDER = 5


@dataclass(frozen=True)
class WindowConfig:
    """RVC's conversion windowing constants, in seconds (`Config.device_config`).

    `x_pad`: context added on each side of every segment (and trimmed from its output); `x_query`: half-width of
    the split-point search; `x_center`: spacing of split points; `x_max`: audio up to this length is converted in
    one piece. `x_pad · 100` must be a whole number of 10 ms frames so that input and output trims line up.
    """

    x_pad: float = 1
    x_query: float = 6
    x_center: float = 38
    x_max: float = 41

    def __post_init__(self) -> None:
        if self.x_pad <= 0 or abs(self.x_pad * 100 - round(self.x_pad * 100)) > 1e-6:
            raise ValueError(f"x_pad must be a positive multiple of 0.01 s, got {self.x_pad}")
        if min(self.x_query, self.x_center, self.x_max) <= 0:
            raise ValueError("x_query, x_center and x_max must be positive")
        if 2 * self.x_query > self.x_center:
            raise ValueError(f"x_query ({self.x_query}) must be at most half of x_center ({self.x_center}), "
                             "otherwise split-point search windows overlap")
        if self.x_max < self.x_center:
            raise ValueError(f"x_max ({self.x_max}) must be at least x_center ({self.x_center})")

    @classmethod
    def fp32(cls) -> WindowConfig:
        """CPU / fp32 constants (RVC's default off fp16 GPUs, and Applio's always): 1, 6, 38, 41 s."""
        return cls(1, 6, 38, 41)

    @classmethod
    def fp16(cls) -> WindowConfig:
        """Half-precision GPU constants: 3, 10, 60, 65 s."""
        return cls(3, 10, 60, 65)

    @classmethod
    def low_memory(cls) -> WindowConfig:
        """GPUs with at most 4 GB (either precision): 1, 5, 30, 32 s."""
        return cls(1, 5, 30, 32)

    @property
    def t_pad(self) -> int:
        return round(self.x_pad * 100) * WINDOW

    @property
    def t_query(self) -> int:
        return round(SAMPLE_RATE * self.x_query)

    @property
    def t_center(self) -> int:
        return round(SAMPLE_RATE * self.x_center)

    @property
    def t_max(self) -> int:
        return round(SAMPLE_RATE * self.x_max)

    def pad_frames(self) -> int:
        """`t_pad` in 10 ms frames (the output trim is this many synthesizer frames)."""
        return self.t_pad // WINDOW


@dataclass(frozen=True)
class Segment:
    """One piece of the padded audio to convert.

    `start`/`stop`: sample range in the padded audio; `pitch_start`/`pitch_stop`: frame range of the whole-file
    pitch track (`stop`/`pitch_stop` None = to the end); `keep_frames`: output frames to keep after dropping the
    `t_pad` context at the front (None = RVC's `[t_pad_tgt : -t_pad_tgt]`, used for the last segment).
    """

    start: int
    stop: int | None
    pitch_start: int
    pitch_stop: int | None
    keep_frames: int | None


def highpass(audio: np.ndarray) -> np.ndarray:
    """RVC's zero-phase 48 Hz high-pass: `filtfilt(butter(5, 48, "high", fs=16000))`. [L] -> float64 [L]."""
    from scipy import signal

    b, a = signal.butter(N=HIGHPASS_ORDER, Wn=HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE)
    return signal.filtfilt(b, a, np.asarray(audio, dtype=np.float64))


def window_energy(audio: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """RVC's `audio_sum[start:stop]`: `s[n] = Σ_{i<160} |pad[n + i]|`, `pad` = audio reflect-padded by 80. -> [stop-start]

    Summed in RVC's order (one shifted slice at a time) so ties and near-ties resolve exactly as RVC's do.
    """
    audio = np.asarray(audio, dtype=np.float64)
    stop = len(audio) if stop is None else min(stop, len(audio))
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2), mode="reflect")[start : stop + WINDOW]
    total = np.zeros(stop - start)
    for i in range(WINDOW):
        total += np.abs(padded[i : i + stop - start])
    return total


def find_split_points(audio: np.ndarray, window: WindowConfig) -> list[int]:
    """Quiet points to cut long (filtered, 16 kHz) audio at, as RVC: [] when `len + 160 <= t_max`.

    For every `t = t_center, 2·t_center, … < len(audio)`, the first minimum of `window_energy` in
    `[t - t_query, t + t_query)` (positions in the unpadded audio, not yet rounded to frames). Only the search
    windows are summed, so 10 minutes of audio take a fraction of a second.
    """
    n = len(audio)
    if n + WINDOW <= window.t_max:
        return []
    points = []
    for t in range(window.t_center, n, window.t_center):
        lo = t - window.t_query
        points.append(lo + int(np.argmin(window_energy(audio, lo, t + window.t_query))))
    return points


def plan_segments(split_points: list[int], window: WindowConfig, rvc_trim: bool = False) -> list[Segment]:
    """RVC's segment list for the reflect-padded audio, given split points in the unpadded audio.

    Split points are rounded down to whole 10 ms frames. Every segment but the last keeps exactly the output that
    covers `[s, t)` of the input (`keep_frames = (t - s) / 160`), so consecutive segments join without a gap.
    RVC itself trims every segment with `[t_pad_tgt : -t_pad_tgt]`, which loses the segment's last 10 ms whenever
    the content encoder yields one frame less than the pitch track (segments of an even number of 10 ms frames):
    the output then skips 10 ms of input at that boundary. `rvc_trim=True` reproduces that (keep_frames None).
    """
    segments: list[Segment] = []
    start = 0
    t = None
    for point in split_points:
        t = point // WINDOW * WINDOW
        segments.append(Segment(start, t + 2 * window.t_pad + WINDOW, start // WINDOW, (t + 2 * window.t_pad) // WINDOW,
                                None if rvc_trim else (t - start) // WINDOW))
        start = t
    last = t if t is not None else 0
    segments.append(Segment(last, None, last // WINDOW, None, None))
    return segments


def reflect_pad(audio: np.ndarray, pad: int) -> np.ndarray:
    """`np.pad(audio, pad, mode="reflect")`; numpy reflects repeatedly when `pad` exceeds the length."""
    return np.pad(audio, (pad, pad), mode="reflect")
