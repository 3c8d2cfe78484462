"""RVC's cutting arithmetic for training audio (`infer/modules/train/preprocess.py`).

One file's audio at the model rate -> 48 Hz 5th-order Butterworth high-pass (causal `lfilter`) -> silence slicer ->
pieces of `per` seconds every `per − 0.3` s (the tail rule in `segment_bounds`) -> drop pieces with max|x| > 2.5 ->
normalise `x/max|x|·0.675 + 0.25·x`. Pure numpy/scipy: no models, no files.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .slicer import Slicer

OVERLAP = 0.3
MAX_PEAK = 2.5  # pieces louder than this are dropped (RVC: "filtered")
NORM_MAX, NORM_ALPHA = 0.9, 0.75
HIGHPASS_HZ = 48
# RVC's training loader drops items whose length estimate filesize // (3·hop) is <= 100 frames, i.e. float32
# slices of about 0.75 s or less (at every sample rate, since hop = sr / 100). We drop them here, loudly.
MIN_SLICE_SECONDS = 0.75


@lru_cache(maxsize=8)
def _highpass_coefficients(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import butter

    return butter(N=5, Wn=HIGHPASS_HZ, btype="high", fs=sample_rate)


def highpass(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RVC's 48 Hz high-pass (one direction, as in training): `[L]` -> float64 `[L]`."""
    from scipy.signal import lfilter

    b, a = _highpass_coefficients(sample_rate)
    return lfilter(b, a, np.asarray(audio, dtype=np.float64))


def segment_bounds(length: int, sample_rate: int, per: float = 3.7, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """Sample ranges RVC cuts from one slicer chunk of `length` samples.

    A piece of `int(per·sr)` samples starts every `per − overlap` seconds while more than `(per + overlap)·sr`
    samples remain from its start; the remainder (at most per + overlap seconds) becomes the last piece.
    """
    bounds = []
    index = 0
    while True:
        start = int(sample_rate * (per - overlap) * index)  # same float expression as RVC
        index += 1
        if length - start > (per + overlap) * sample_rate:
            bounds.append((start, start + int(per * sample_rate)))
        else:
            bounds.append((start, length))
            return bounds


def normalize_piece(piece: np.ndarray) -> np.ndarray | None:
    """RVC's loudness normalisation; None for pieces RVC drops (peak above 2.5) or that are digital silence."""
    peak = float(np.abs(piece).max()) if piece.size else 0.0
    if peak > MAX_PEAK or peak == 0.0:
        return None
    return piece / peak * (NORM_MAX * NORM_ALPHA) + (1 - NORM_ALPHA) * piece


def cut_training_pieces(audio: np.ndarray, sample_rate: int, per: float = 3.7,
                        overlap: float = OVERLAP) -> list[tuple[int, np.ndarray]]:
    """High-pass, slice at silences and cut into pieces: `[(start sample in audio, raw piece float64)]`."""
    filtered = highpass(audio, sample_rate)
    pieces = []
    for chunk_start, chunk_end in Slicer(sample_rate).slice_positions(filtered):
        for start, end in segment_bounds(chunk_end - chunk_start, sample_rate, per, overlap):
            pieces.append((chunk_start + start, filtered[chunk_start + start: chunk_start + end]))
    return pieces


def slice_for_training(audio: np.ndarray, sample_rate: int, per: float = 3.7,
                       overlap: float = OVERLAP) -> list[tuple[float, np.ndarray]]:
    """RVC's preprocessing of one file's audio `[L]`: `[(offset in seconds, normalised float32 piece)]`."""
    out = []
    for start, raw in cut_training_pieces(audio, sample_rate, per, overlap):
        piece = normalize_piece(raw)
        if piece is not None:
            out.append((start / sample_rate, piece.astype(np.float32)))
    return out
