"""Objective comparison of converted audio with a reference: MCD, F0 error and correlation, V/UV error, SC.

Both signals are analysed at 16 kHz on one frame grid (hop 160 = 10 ms, the grid RVC's pitch uses):

* STFT: Hann window of 1024 samples, hop 160, centred; linear magnitudes `|S|` (spectral convergence, figure);
* mel-cepstra, the standard MCD features: pysptk's `sp2mc` conversion (which ESPnet's and pymcd's MCD apply to WORLD
  envelopes; here to the short-time spectrum, which needs no vocoder and measured within 0.8 dB of the WORLD-based
  figure on the voice lab's voices). The power spectrum P of a 25 ms Blackman window (400 samples, FFT 1024, same
  frame centres), floored at 1e-10; its cepstrum
  `c = irfft(ln P)` with c(0) halved, which makes `c` the one-sided cepstrum of the natural-log *amplitude*,
  `ln|X(ω)| = c0 + Σ_m c_m·cos(mω)`; frequency-warped as SPTK's `freqt` does (all-pass constant α = 0.42, the usual
  value at 16 kHz) to the order-24 mel-cepstrum, `ln|X| ≈ c̃0 + Σ_{m=1..24} c̃_m·cos(m·ω̃)` on the mel-like frequency
  axis `ω̃`; coefficients c̃1..c̃24 are kept (c̃0, the frame energy, is left out, so a pure gain change gives MCD 0);
* F0: `rvc_peft.features.pitch.extract_f0` (default "pm", Praat's autocorrelation: fast and needs no model
  weights), one value per frame, 0 = unvoiced.

Frames are paired by dynamic time warping of the mel cepstra (Euclidean cost, steps (1,1), (0,1), (1,0); see `dtw`),
or one to one when `align="none"` (RVC keeps the timing of its input, so a conversion can be compared with its source
frame by frame). Over the pairs:

* `mcd_db` = mean of `(10 / ln 10) · sqrt(2 · Σ_{d=1..24} (c̃_d − c̃'_d)²)`: the RMS difference of the two smoothed
  log-amplitude spectra in dB over the warped frequency axis. Measured with the voice lab: 0 for the same audio;
  7-13 dB between two different voices reading the same text (espeak-ng, flite); 15-16 dB for white noise against
  speech; a held-out clip of a target voice reconstructed by the lab base 7.7 dB, by a 40-step LoRA on that voice
  5.5 dB, by an untrained generator 19 dB. Lower is better;
* `f0_rmse_cents` = RMS of `1200 · log2(f0_conv / f0_ref)` and `f0_corr` = Pearson correlation of F0 in Hz, both over
  pairs voiced in both signals (None when fewer than two such pairs, or no variance);
* `vuv_error_rate` = share of pairs whose voicing decisions differ;
* `spectral_convergence` = `‖|S_ref| − |S_conv|‖_F / ‖|S_ref|‖_F` over the paired frames.

With `quality=True` (or `speaker_reference=`), `evaluate` adds the metrics of `rvc_peft.inference.quality`, whose
models ship inside wheels (the `quality` extra): `secs` (speaker similarity of the converted audio to
`speaker_reference`, the target voice), `secs_source` (to the second signal, usually the source that was converted),
`dnsmos_sig`/`dnsmos_bak`/`dnsmos_ovrl`/`dnsmos_p808` of the converted audio and `source_dnsmos_ovrl` of the second
signal. A signal too silent to score gets None and a line in `quality_notes`.

`evaluate(...)` returns a JSON-ready dict; `save_figure(...)` draws F0 tracks and spectrograms side by side (PNG,
matplotlib's Agg backend, no display needed).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
HOP = 160
N_FFT = 1024
MCEP_WINDOW = 400  # 25 ms, SPTK's usual analysis frame at 16 kHz
MCEP_ALPHA = 0.42  # all-pass constant that approximates the mel scale at 16 kHz (SPTK's table)
N_CEPSTRA = 24  # mel-cepstrum order: c1..c24 enter the MCD
POWER_FLOOR = 1e-10  # keeps ln() finite in digital silence
MAX_DTW_CELLS = 25_000_000  # about 50 s × 50 s of 10 ms frames (the accumulated cost matrix is kept whole)
MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


class EvaluationError(ValueError):
    """Inputs that cannot be compared (unreadable, empty, too long to align); the message names the file."""


@dataclass
class Analysis:
    """Frame-level analysis of one signal (all arrays share the 10 ms frame grid)."""

    name: str
    audio: np.ndarray  # [L] float32 at 16 kHz
    magnitude: np.ndarray  # [T, N_FFT // 2 + 1]
    cepstra: np.ndarray  # [T, N_CEPSTRA] mel-cepstrum c1..c24 (natural-log amplitude units)
    f0: np.ndarray  # [T] Hz, 0 = unvoiced

    @property
    def frames(self) -> int:
        return len(self.f0)


def _load(source: Any, sample_rate: int | None, name: str) -> tuple[np.ndarray, str]:
    from ..features.audio import AudioReadError, load_audio, resample

    if isinstance(source, (str, os.PathLike)):
        try:
            return load_audio(source, SAMPLE_RATE), str(source)
        except AudioReadError as err:
            raise EvaluationError(str(err)) from None
    if isinstance(source, tuple):
        source, sample_rate = source
    audio = np.asarray(source, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1 if audio.shape[1] < audio.shape[0] else 0)
    if audio.ndim != 1 or audio.size == 0:
        raise EvaluationError(f"{name}: expected non-empty mono audio, got shape {list(audio.shape)}")
    if not np.isfinite(audio).all():
        raise EvaluationError(f"{name}: contains NaN or infinite samples")
    if sample_rate is None:
        raise EvaluationError(f"{name}: an array needs its sample rate (pass (audio, sample_rate))")
    return resample(audio, int(sample_rate), SAMPLE_RATE), name


def analyze(source: Any, *, sample_rate: int | None = None, f0_method: str = "pm", name: str = "audio",
            **f0_kwargs: Any) -> Analysis:
    """Load (path, array + rate, or (array, rate)) and analyze one signal on the 10 ms grid."""
    import librosa

    audio, name = _load(source, sample_rate, name)
    if len(audio) < N_FFT // 2:
        raise EvaluationError(f"{name}: {len(audio) / SAMPLE_RATE:.3f} s is too short to analyze (at least "
                              f"{N_FFT // 2 / SAMPLE_RATE:.3f} s)")
    spec = librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)
    magnitude = np.abs(spec).T.astype(np.float64)  # [T, bins]
    cepstra = mel_cepstrum(audio)[:, 1:]
    from ..features.pitch import extract_f0

    f0 = extract_f0(audio, f0_method, p_len=magnitude.shape[0], **f0_kwargs).astype(np.float64)
    return Analysis(name, audio, magnitude, cepstra, f0)


@functools.lru_cache(maxsize=8)
def warp_matrix(length: int, order: int, alpha: float) -> np.ndarray:
    """[length, order+1]: row n = the order+1 first mel-cepstral coefficients of a unit cepstrum at quefrency n.

    Warping replaces `z⁻¹` by the all-pass `(z̃⁻¹ + α) / (1 + α·z̃⁻¹)` (the inverse of SPTK's
    `(z⁻¹ − α) / (1 − α·z⁻¹)`), so `z⁻ⁿ` becomes that fraction to the n-th power, a power series in `z̃⁻¹`: each row
    is the previous one times `(x + α)` and times `1 / (1 + α·x) = Σ_k (−α)^k·x^k`, truncated at `x^order`.
    """
    inverse = (-alpha) ** np.arange(order + 1)
    matrix = np.zeros((length, order + 1))
    row = np.zeros(order + 1)
    row[0] = 1.0
    for n in range(length):
        matrix[n] = row
        times_x_plus_alpha = np.concatenate([[0.0], row[:-1]]) + alpha * row
        row = np.convolve(times_x_plus_alpha, inverse)[: order + 1]
    return matrix


def freqt(cepstrum: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Frequency warping of minimum-phase cepstra [..., M+1] -> mel-cepstra [..., order+1] (SPTK's `freqt`).

    Exact up to the truncation at `order` (the same numbers as SPTK's recursion, which computes the same series).
    """
    c = np.asarray(cepstrum, dtype=np.float64)
    return c @ warp_matrix(c.shape[-1], int(order), float(alpha))


@functools.lru_cache(maxsize=4)
def _mel_cepstrum_matrix(n_fft: int, order: int, alpha: float) -> np.ndarray:
    """[n_fft//2+1, order+1]: ln P (one frame's log power spectrum) @ matrix = its mel-cepstrum.

    `irfft` and `freqt` are both linear, so the whole log-spectrum -> mel-cepstrum map is one matrix, built once.
    """
    bins = n_fft // 2 + 1
    cepstra = np.fft.irfft(np.eye(bins), n=n_fft, axis=1)  # symmetric cepstrum of ln P, [bins, n_fft]
    # ln P = c0 + 2 Σ c_n cos(nω), so with c0 halved `cepstra` is the one-sided cepstrum of ln|X| = ½ ln P (SPTK's
    # convention); the mirrored upper half (quefrencies n_fft-n) adds about α^(n_fft/2) to the warped taps.
    cepstra[:, 0] /= 2.0
    return freqt(cepstra, order, alpha)


def mel_cepstrum_from_power(power: np.ndarray, *, order: int = N_CEPSTRA, alpha: float = MCEP_ALPHA) -> np.ndarray:
    """Mel-cepstra [..., order+1] of power spectra [..., n_fft//2+1] (bins 0..Nyquist), like `pysptk.sp2mc`.

    Units: natural-log amplitude, `ln|X(ω)| ≈ c0 + Σ_m c_m·cos(m·ω̃)`, where `ω̃` is `ω` warped by the all-pass
    constant `alpha`. Values below `POWER_FLOOR` are raised to it.
    """
    power = np.asarray(power, dtype=np.float64)
    n_fft = 2 * (power.shape[-1] - 1)
    if n_fft < 2:
        raise ValueError(f"a power spectrum needs at least 2 bins, got shape {list(power.shape)}")
    return np.log(np.maximum(power, POWER_FLOOR)) @ _mel_cepstrum_matrix(n_fft, int(order), float(alpha))


def mel_cepstrum(audio: np.ndarray, *, order: int = N_CEPSTRA, alpha: float = MCEP_ALPHA) -> np.ndarray:
    """Mel-cepstra c0..c_order [T, order+1] of 16 kHz audio on the 10 ms grid (see the module docstring)."""
    import librosa

    spec = librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=N_FFT, hop_length=HOP, win_length=MCEP_WINDOW,
                        window="blackman", center=True)
    return mel_cepstrum_from_power(np.abs(spec.T).astype(np.float64) ** 2, order=order, alpha=alpha)


def log_mel_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RVC's 80-band log-mel spectrogram (n_fft 1024, 10 ms hop) in dB of magnitude: audio [N] -> [80, frames]."""
    import torch

    from ..features.spectrogram import mel_spectrogram

    mel = mel_spectrogram(torch.from_numpy(np.asarray(audio, dtype=np.float32))[None], 1024, 80, sample_rate,
                          sample_rate // 100, 1024)[0].numpy()
    return mel * (20 / np.log(10))  # natural log of magnitude -> dB


def log_mel_distance_db(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean |Δ| (dB) of two time-aligned signals' log-mel spectrograms, both floored 80 dB under the louder peak.

    The measure of how far a fast or streamed conversion is from the reference one (same length, same timing; no
    alignment, unlike the MCD of `evaluate`): fp32 copies give 0, a new noise seed about 3 dB on random-weight models.
    """
    ma, mb = log_mel_db(a, sample_rate), log_mel_db(b, sample_rate)
    frames = min(ma.shape[1], mb.shape[1])
    floor = max(ma.max(), mb.max()) - 80.0
    return float(np.mean(np.abs(np.maximum(ma[:, :frames], floor) - np.maximum(mb[:, :frames], floor))))


def dtw(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """Dynamic time warping of a cost matrix [N, M] with steps (1,1), (0,1), (1,0), all of weight 1.

    Returns (total cost of the best path, path [K, 2] of (i, j) from (0, 0) to (N-1, M-1)). The accumulated cost is
    filled one anti-diagonal at a time (each depends only on the two before it), so it is plain vectorised numpy;
    ties prefer the diagonal step, then (0,1), then (1,0) (librosa's order).
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        best = np.minimum(acc[i - 1, j - 1], np.minimum(acc[i, j - 1], acc[i - 1, j]))
        acc[i, j] = cost[i - 1, j - 1] + best
    path = [(n - 1, m - 1)]
    i, j = n, m
    while (i, j) != (1, 1):
        steps = ((i - 1, j - 1), (i, j - 1), (i - 1, j))
        i, j = min(steps, key=lambda step: acc[step])  # min() keeps the first of equal values
        path.append((i - 1, j - 1))
    return float(acc[n, m]), np.array(path[::-1], dtype=np.int64)


def dtw_path(converted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """DTW of two feature sequences [Tc, D], [Tr, D] (Euclidean cost) -> path [N, 2] of (i_conv, j_ref), in order."""
    cells = converted.shape[0] * reference.shape[0]
    if cells > MAX_DTW_CELLS:
        raise EvaluationError(
            f"{converted.shape[0]} × {reference.shape[0]} frames are too many to align with DTW (limit "
            f"{MAX_DTW_CELLS:,} cells, about 50 s each); compare shorter clips or use align='none'")
    from scipy.spatial.distance import cdist

    return dtw(cdist(converted, reference, metric="euclidean"))[1]


def frame_pairs(converted: Analysis, reference: Analysis, align: str = "dtw") -> np.ndarray:
    """Pairs of frame indices (i in converted, j in reference) the metrics are averaged over."""
    if align == "dtw":
        return dtw_path(converted.cepstra, reference.cepstra)
    if align == "none":
        n = min(converted.frames, reference.frames)
        return np.stack([np.arange(n), np.arange(n)], axis=1)
    raise ValueError(f"align must be 'dtw' or 'none', got {align!r}")


def mel_cepstral_distortion(converted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame MCD in dB of paired mel-cepstra [N, D] (c1..cD, c0 already left out): `MCD_SCALE · ‖Δc‖`."""
    diff = np.asarray(converted, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return MCD_SCALE * np.sqrt((diff**2).sum(axis=-1))


def metrics(converted: Analysis, reference: Analysis, pairs: np.ndarray) -> dict[str, Any]:
    """The metrics of the module docstring over `pairs` [N, 2]."""
    ic, jr = pairs[:, 0], pairs[:, 1]
    mcd = float(np.mean(mel_cepstral_distortion(converted.cepstra[ic], reference.cepstra[jr])))
    ref_mag, conv_mag = reference.magnitude[jr], converted.magnitude[ic]
    ref_norm = float(np.sqrt((ref_mag**2).sum()))
    sc = float(np.sqrt(((ref_mag - conv_mag) ** 2).sum())) / ref_norm if ref_norm > 0 else None
    f0c, f0r = converted.f0[ic], reference.f0[jr]
    voiced_c, voiced_r = f0c > 0, f0r > 0
    both = voiced_c & voiced_r
    rmse = corr = None
    if both.sum() >= 2:
        cents = 1200.0 * np.log2(f0c[both] / f0r[both])
        rmse = float(np.sqrt(np.mean(cents**2)))
        if np.std(f0c[both]) > 0 and np.std(f0r[both]) > 0:
            corr = float(np.corrcoef(f0c[both], f0r[both])[0, 1])
    return {
        "mcd_db": mcd,
        "f0_rmse_cents": rmse,
        "f0_corr": corr,
        "vuv_error_rate": float(np.mean(voiced_c != voiced_r)),
        "spectral_convergence": sc,
        "aligned_pairs": len(pairs),
        "voiced_pairs": int(both.sum()),
    }


def quality_selection(quality: bool | Collection[str] | None, speaker_reference: Any = None) -> tuple[str, ...]:
    """The quality metrics `evaluate(quality=..., speaker_reference=...)` computes: a subset of ("secs", "dnsmos").

    None: SECS when a speaker reference is given, else nothing; True: both; False: none; or the names themselves.
    """
    if quality is None:
        return ("secs",) if speaker_reference is not None else ()
    if isinstance(quality, bool):
        return ("secs", "dnsmos") if quality else ()
    chosen = tuple(dict.fromkeys(quality))
    unknown = [name for name in chosen if name not in ("secs", "dnsmos")]
    if unknown:
        raise ValueError(f"unknown quality metrics {unknown}; choose from 'secs', 'dnsmos'")
    return chosen


def quality_metrics(converted: Analysis, reference: Analysis, metrics: Collection[str] = ("secs", "dnsmos"),
                    speaker_reference: Any = None) -> dict[str, Any]:
    """SECS and DNSMOS of `converted` (see the module docstring); raises `QualityMetricsUnavailable` if a package
    is missing. `speaker_reference`: anything `quality.reference_embedding` takes (paths, clips, an embedding)."""
    from .quality import dnsmos, reference_embedding, require, speaker_embedding

    require(*metrics)
    out: dict[str, Any] = {}
    notes: list[str] = []

    def attempt(function: Any, analysis: Analysis, what: str) -> Any:
        try:
            return function(analysis.audio, SAMPLE_RATE)
        except ValueError as err:  # silent or unusable signal: a None and a note, not a failed evaluation
            notes.append(f"{analysis.name}: no {what} ({err})")
            return None

    if "secs" in metrics:
        target = reference_embedding(speaker_reference) if speaker_reference is not None else None
        conv_embedding = attempt(speaker_embedding, converted, "SECS")
        ref_embedding = attempt(speaker_embedding, reference, "SECS")
        if target is not None:
            out["secs"] = None if conv_embedding is None else float(conv_embedding @ target)
        both = conv_embedding is not None and ref_embedding is not None
        out["secs_source"] = float(conv_embedding @ ref_embedding) if both else None
    if "dnsmos" in metrics:
        scores = attempt(dnsmos, converted, "DNSMOS")
        for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"):
            out[key] = None if scores is None else scores[key]
        source_scores = attempt(dnsmos, reference, "DNSMOS")
        out["source_dnsmos_ovrl"] = None if source_scores is None else source_scores["dnsmos_ovrl"]
    if notes:
        out["quality_notes"] = notes
    return out


def evaluate(
    converted: Any,
    reference: Any,
    *,
    sample_rate: int | None = None,
    reference_sample_rate: int | None = None,
    f0_method: str = "pm",
    align: str = "dtw",
    figure: str | os.PathLike | None = None,
    quality: bool | Collection[str] | None = None,
    speaker_reference: Any = None,
    **f0_kwargs: Any,
) -> dict[str, Any]:
    """Compare `converted` with `reference` (paths, arrays with their rates, or (array, rate) tuples).

    Returns a JSON-ready dict: the metrics (see the module docstring), frame counts, durations and settings.
    `figure=path.png` also writes the comparison figure. Raises `EvaluationError` naming the bad input.
    `quality=True` adds SECS and DNSMOS (`secs_source`, `dnsmos_*`, `source_dnsmos_ovrl`; see `quality_selection`),
    `speaker_reference=` (target-voice files/folders, clips or an embedding) adds `secs`; a missing package raises
    `rvc_peft.inference.quality.QualityMetricsUnavailable`.
    """
    selected = quality_selection(quality, speaker_reference)
    if speaker_reference is not None and "secs" not in selected:
        raise ValueError("speaker_reference is used by SECS: pass quality=True or include 'secs'")
    conv = analyze(converted, sample_rate=sample_rate, f0_method=f0_method, name="converted", **f0_kwargs)
    ref = analyze(reference, sample_rate=reference_sample_rate or sample_rate, f0_method=f0_method,
                  name="reference", **f0_kwargs)
    pairs = frame_pairs(conv, ref, align)
    result = {
        "converted": conv.name,
        "reference": ref.name,
        **metrics(conv, ref, pairs),
        "converted_seconds": round(len(conv.audio) / SAMPLE_RATE, 4),
        "reference_seconds": round(len(ref.audio) / SAMPLE_RATE, 4),
        "converted_frames": conv.frames,
        "reference_frames": ref.frames,
        "settings": {"analysis_sample_rate": SAMPLE_RATE, "hop": HOP, "n_fft": N_FFT,
                     "cepstra": f"mel-cepstrum c1..c{N_CEPSTRA}, alpha {MCEP_ALPHA}, {MCEP_WINDOW}-sample window",
                     "f0_method": f0_method, "align": align},
    }
    if selected:
        result.update(quality_metrics(conv, ref, selected, speaker_reference))
        result["settings"]["quality_metrics"] = list(selected)
    if figure is not None:
        result["figure"] = str(save_figure(figure, conv, ref, result))
    return result


def save_figure(path: str | os.PathLike, converted: Analysis, reference: Analysis,
                result: dict[str, Any] | None = None) -> Path:
    """PNG with the two F0 tracks on top and both spectrograms side by side below (written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 7), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
    ax_f0 = fig.add_subplot(grid[0, :])
    for analysis, color in ((reference, "tab:blue"), (converted, "tab:orange")):
        times = np.arange(analysis.frames) * HOP / SAMPLE_RATE
        f0 = np.where(analysis.f0 > 0, analysis.f0, np.nan)
        ax_f0.plot(times, f0, color=color, linewidth=1.2, label=f"{Path(analysis.name).name} ({analysis.name!s})"[:80])
    ax_f0.set_xlabel("time (s)")
    ax_f0.set_ylabel("F0 (Hz)")
    ax_f0.legend(loc="upper right", fontsize=8)
    if result is not None:
        parts = [f"MCD {result['mcd_db']:.2f} dB"]
        if result.get("f0_rmse_cents") is not None:
            parts.append(f"F0 RMSE {result['f0_rmse_cents']:.1f} cents")
        if result.get("f0_corr") is not None:
            parts.append(f"F0 corr {result['f0_corr']:.3f}")
        parts.append(f"V/UV error {100 * result['vuv_error_rate']:.1f} %")
        if result.get("spectral_convergence") is not None:
            parts.append(f"SC {result['spectral_convergence']:.3f}")
        secs, mos = [], []  # quality metrics, when computed: a second line
        if result.get("secs") is not None:
            secs.append(f"target voice {result['secs']:.3f}")
        if result.get("secs_source") is not None:
            secs.append(f"reference {result['secs_source']:.3f}")
        if result.get("dnsmos_ovrl") is not None:
            mos.append(f"converted {result['dnsmos_ovrl']:.2f} (SIG {result['dnsmos_sig']:.2f}, "
                       f"BAK {result['dnsmos_bak']:.2f})")
        if result.get("source_dnsmos_ovrl") is not None:
            mos.append(f"reference {result['source_dnsmos_ovrl']:.2f}")
        quality = ([f"SECS to {', '.join(secs)}"] if secs else []) + ([f"DNSMOS OVRL {', '.join(mos)}"] if mos else [])
        ax_f0.set_title(" · ".join(parts) + ("\n" + " · ".join(quality) if quality else ""))
    top = max(float(converted.magnitude.max()), float(reference.magnitude.max()), 1e-10)
    for column, (analysis, title) in enumerate(((reference, "reference"), (converted, "converted"))):
        ax = fig.add_subplot(grid[1, column])
        db = 20 * np.log10(np.maximum(analysis.magnitude.T, top * 1e-5) / top)
        extent = (0.0, analysis.frames * HOP / SAMPLE_RATE, 0.0, SAMPLE_RATE / 2000)
        image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-100, vmax=0)
        ax.set_title(f"{title}: {Path(analysis.name).name}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (kHz)")
    fig.colorbar(image, ax=fig.axes[-1], label="dB")
    from ..utils.files import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
