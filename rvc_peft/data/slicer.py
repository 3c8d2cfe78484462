"""RVC's silence slicer (`infer/lib/slicer2.py`, from openvpi/audio-slicer) with the numbers RVC trains with.

Frames are `hop` = round(sr·15 ms) samples apart; a frame's loudness is the RMS over a 4·hop window centred
on it (librosa-style zero padding of window//2 on each side). Runs of silent frames (RMS below −42 dB) long
enough to cut are replaced by a cut that keeps at most `max_sil_kept` frames of silence on each side, placed
at RMS minima. All lengths below are in frames unless the name says samples.
"""

from __future__ import annotations

import numpy as np


def frame_rms(samples: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS per frame like `librosa.feature.rms(center=True, pad_mode="constant")`: `[L]` -> `[1 + L // hop]`."""
    half = frame_length // 2
    padded = np.pad(np.asarray(samples, dtype=np.float64), (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    return np.sqrt(np.mean(frames**2, axis=-1))


class Slicer:
    """Split a waveform at long silences. Arguments are in dB / milliseconds, as in RVC.

    `slice_positions(waveform)` gives `(start_sample, end_sample)` pairs; `slice(waveform)` the pieces.
    `waveform` is `[L]` or `[C, L]` (channels are averaged for the loudness only).
    """

    def __init__(
        self,
        sr: int,
        threshold: float = -42.0,
        min_length: int = 1500,
        min_interval: int = 400,
        hop_size: int = 15,
        max_sil_kept: int = 500,
    ) -> None:
        if not min_length >= min_interval >= hop_size:
            raise ValueError("the slicer needs min_length >= min_interval >= hop_size")
        if not max_sil_kept >= hop_size:
            raise ValueError("the slicer needs max_sil_kept >= hop_size")
        interval_samples = sr * min_interval / 1000
        self.threshold = 10 ** (threshold / 20.0)
        self.hop_size = round(sr * hop_size / 1000)
        self.win_size = min(round(interval_samples), 4 * self.hop_size)
        self.min_length = round(sr * min_length / 1000 / self.hop_size)
        self.min_interval = round(interval_samples / self.hop_size)
        self.max_sil_kept = round(sr * max_sil_kept / 1000 / self.hop_size)

    def _silence_tags(self, rms: np.ndarray) -> list[tuple[int, int]]:
        """Frame ranges `(first, last)` of silence to remove (a cut when first == last)."""
        keep = self.max_sil_kept
        tags: list[tuple[int, int]] = []
        silence_start: int | None = None
        clip_start = 0

        def argmin_from(lo: int, hi: int) -> int:  # first minimum of rms[lo:hi], as an absolute frame
            return int(rms[lo:hi].argmin()) + lo

        for i, value in enumerate(rms):
            if value < self.threshold:
                if silence_start is None:
                    silence_start = i
                continue
            if silence_start is None:
                continue
            is_leading_silence = silence_start == 0 and i > keep
            needs_middle_cut = i - silence_start >= self.min_interval and i - clip_start >= self.min_length
            if not is_leading_silence and not needs_middle_cut:
                silence_start = None
                continue
            if i - silence_start <= keep:
                # Short silence: one cut at its quietest frame.
                pos = argmin_from(silence_start, i + 1)
                tags.append((0, pos) if silence_start == 0 else (pos, pos))
                clip_start = pos
            elif i - silence_start <= keep * 2:
                # Medium silence: the two kept margins overlap; cut around the quietest frame of the overlap.
                pos = argmin_from(i - keep, silence_start + keep + 1)
                pos_left = argmin_from(silence_start, silence_start + keep + 1)
                pos_right = argmin_from(i - keep, i + 1)
                if silence_start == 0:
                    tags.append((0, pos_right))
                    clip_start = pos_right
                else:
                    tags.append((min(pos_left, pos), max(pos_right, pos)))
                    clip_start = max(pos_right, pos)
            else:
                # Long silence: keep at most `keep` frames after the clip before and before the next one.
                pos_left = argmin_from(silence_start, silence_start + keep + 1)
                pos_right = argmin_from(i - keep, i + 1)
                tags.append((0, pos_right) if silence_start == 0 else (pos_left, pos_right))
                clip_start = pos_right
            silence_start = None
        total = len(rms)
        if silence_start is not None and total - silence_start >= self.min_interval:
            silence_end = min(total, silence_start + keep)
            tags.append((argmin_from(silence_start, silence_end + 1), total + 1))
        return tags

    def slice_positions(self, waveform: np.ndarray) -> list[tuple[int, int]]:
        """`(start, end)` sample ranges of the kept pieces, in order (empty when everything is silence)."""
        samples = waveform.mean(axis=0) if waveform.ndim > 1 else waveform
        length = samples.shape[0]
        # RVC compares the sample count with min_length in *frames* here (so only tiny inputs skip slicing);
        # kept as is for identical results.
        if length <= self.min_length:
            return [(0, length)]
        rms = frame_rms(samples, self.win_size, self.hop_size)
        tags = self._silence_tags(rms)
        if not tags:
            return [(0, length)]
        total = len(rms)
        frame_ranges = []
        if tags[0][0] > 0:
            frame_ranges.append((0, tags[0][0]))
        frame_ranges += [(tags[k][1], tags[k + 1][0]) for k in range(len(tags) - 1)]
        if tags[-1][1] < total:
            frame_ranges.append((tags[-1][1], total))
        return [(a * self.hop_size, min(length, b * self.hop_size)) for a, b in frame_ranges]

    def slice(self, waveform: np.ndarray) -> list[np.ndarray]:
        """The pieces of `waveform` (`[L]` or `[C, L]`) between the removed silences."""
        return [waveform[..., start:end] for start, end in self.slice_positions(waveform)]
