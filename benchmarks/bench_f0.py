"""F0 benchmark: speed (s per s of audio) and accuracy of every ``extract_f0`` method; prints JSON.

Synthetic set: harmonic tones with known F0 (110, 220 and 440 Hz with +-0.5 semitone vibrato, and a 120->360 Hz
glide), each with a 0.3 s unvoiced gap. Accuracy is pooled over "stable" frames (more than 3 frames from a
voicing change or a clip end): gross pitch error (GPE, % of frames voiced in both truth and estimate that are off by more than
50 cents), median / mean absolute cents error on those frames, and voicing decision error (VDE, % of stable
frames whose voiced/unvoiced decision differs from the truth).

Speech set: espeak-ng sentences (skipped if espeak-ng is missing): speed, voiced fraction and median F0; accuracy
is against harvest as the reference (not ground truth) and marked as such.

rmvpe: with ``--rmvpe PATH`` (RVC's ``rmvpe.pt``, a folder holding it, or a Hub id) it is measured like every other
method, accuracy included. Without it, rmvpe runs with RANDOM weights (the real architecture): its speed is real,
its accuracy is not reported, and its entry says so (``"weights": "random"``). ``s_per_s`` is wall-clock time, ``cpu_s_per_s`` this process's CPU time (all threads; less affected by
other load on the machine, but it counts OpenMP spin-waiting when threads > 1). ``load_s`` is the one-off model load plus first call (numba compilation for crepe's viterbi decoder).

Usage: python benchmarks/bench_f0.py [--methods pm,dio,...] [--duration 3] [--threads 2] [--no-speech]
       [--rmvpe rmvpe.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvc_peft.features.pitch import F0_METHODS, extract_f0
from rvc_peft.features.rmvpe import E2E, RMVPE, RMVPELoadError, resolve_rmvpe_file
from rvc_peft.features.synthetic import espeak_speech, voiced_signal

# (voice, espeak pitch 0-99, text). Avoid en-us+f1/f3: their period-doubled voicing makes harvest (the reference)
# and fcpe report the octave below on about half the frames.
SENTENCES = [
    ("en-us", 50, "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."),
    ("en-us+f4", 60, "She sells sea shells by the sea shore; the shells she sells are surely sea shells."),
    ("en-gb", 70, "How much wood would a woodchuck chuck if a woodchuck could chuck wood?"),
]


def stable_frames(truth: np.ndarray, margin: int = 3) -> np.ndarray:
    """Frames more than ``margin`` frames from a voicing change or from either end of the clip."""
    voiced = np.r_[False, truth > 0, False]  # clip ends count as voicing changes (half-empty windows)
    change = np.flatnonzero(np.diff(voiced.astype(int))) - 0.5
    return np.all(np.abs(np.arange(len(truth))[:, None] - change[None, :]) > margin, axis=1)


def accuracy(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Pitch and voicing errors of estimates against truths (Hz, 0 = unvoiced), pooled over stable frames."""
    kept = [(estimate[stable_frames(truth)], truth[stable_frames(truth)]) for estimate, truth in pairs]
    estimate = np.concatenate([e for e, _ in kept])
    truth = np.concatenate([t for _, t in kept])
    both = (estimate > 0) & (truth > 0)
    cents = np.abs(1200 * np.log2(estimate[both] / truth[both]))
    return {
        "gpe_percent": round(100 * float(np.mean(cents > 50)), 2) if both.any() else None,
        "median_abs_cents": round(float(np.median(cents)), 2) if both.any() else None,
        "mean_abs_cents": round(float(np.mean(cents)), 2) if both.any() else None,
        "vde_percent": round(100 * float(np.mean((estimate > 0) != (truth > 0))), 2),
        "frames": len(truth),
    }


def synthetic_set(duration: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    gap = [(0.4 * duration, 0.4 * duration + 0.3)]
    clips = [(f"tone_{f0}hz", *voiced_signal(float(f0), duration, unvoiced_gaps=gap, seed=i))
             for i, f0 in enumerate((110, 220, 440))]
    glide = np.geomspace(120.0, 360.0, int(duration * 100) + 1)
    clips.append(("glide_120_360hz", *voiced_signal(glide, duration, vibrato_semitones=0.0, unvoiced_gaps=gap, seed=3)))
    return clips


def speech_set(folder: Path) -> list[tuple[str, np.ndarray]]:
    import soundfile as sf

    clips = []
    for i, (voice, pitch_setting, text) in enumerate(SENTENCES):
        path = espeak_speech(text, folder / f"speech_{i}.wav", voice=voice, pitch=pitch_setting, sample_rate=16000)
        if path is None:
            return []
        clips.append((f"espeak_{voice}_p{pitch_setting}", sf.read(path, dtype="float32")[0]))
    return clips


def timed(audio: np.ndarray, method: str, rmvpe_model) -> tuple[np.ndarray, float, float]:
    """f0, wall seconds, CPU seconds of this process (all threads; robust to other load on the machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    f0 = extract_f0(audio, method, rmvpe_model=rmvpe_model)
    return f0, time.perf_counter() - wall, time.process_time() - cpu


def run(methods: list[str], duration: float, with_speech: bool, rmvpe_weights: str | None = None) -> dict:
    if rmvpe_weights is not None:
        rmvpe_model = rmvpe_weights  # loaded (and cached) by the first extract_f0 call: part of load_s, like crepe's
    else:
        torch.manual_seed(0)
        rmvpe_model = RMVPE(E2E()).eval()  # real architecture, random weights: speed only
    # methods whose F0 means something (rmvpe only with real weights)
    scored = {m for m in methods if m != "rmvpe" or rmvpe_weights is not None}
    synthetic = synthetic_set(duration)
    with tempfile.TemporaryDirectory() as folder:
        speech = speech_set(Path(folder)) if with_speech else []
    reference = {name: extract_f0(audio, "harvest") for name, audio in speech}
    results = {}
    for method in methods:
        start = time.perf_counter()
        extract_f0(synthetic[0][1][:8000], method, rmvpe_model=rmvpe_model)  # load + warm up
        entry: dict = {"load_s": round(time.perf_counter() - start, 3)}
        if method == "rmvpe":
            entry["weights"] = rmvpe_weights or "random"
            if method not in scored:
                entry["note"] = "RANDOM weights (no --rmvpe given): speed only, accuracy not meaningful"
        seconds = elapsed = cpu = 0.0
        pairs = {}
        for name, audio, truth in synthetic:
            f0, took, took_cpu = timed(audio, method, rmvpe_model)
            seconds, elapsed, cpu = seconds + len(audio) / 16000, elapsed + took, cpu + took_cpu
            pairs[name] = (f0, truth)
        entry["synthetic"] = {"s_per_s": round(elapsed / seconds, 4), "cpu_s_per_s": round(cpu / seconds, 4)}
        if method in scored:
            entry["synthetic"].update(accuracy(list(pairs.values())))
            entry["synthetic"]["per_clip"] = {
                name: {k: v for k, v in accuracy([pair]).items() if k != "frames"} for name, pair in pairs.items()}
        if speech:
            seconds = elapsed = cpu = 0.0
            voiced, medians, versus = [], [], {}
            for name, audio in speech:
                f0, took, took_cpu = timed(audio, method, rmvpe_model)
                seconds, elapsed, cpu = seconds + len(audio) / 16000, elapsed + took, cpu + took_cpu
                voiced.append(float(np.mean(f0 > 0)))
                medians.append(float(np.median(f0[f0 > 0])) if (f0 > 0).any() else 0.0)
                if method in scored and method != "harvest":
                    versus[name] = accuracy([(f0, reference[name])])
            entry["speech"] = {"s_per_s": round(elapsed / seconds, 4), "cpu_s_per_s": round(cpu / seconds, 4),
                               "voiced_fraction": [round(v, 3) for v in voiced],
                               "median_f0_hz": [round(m, 1) for m in medians]}
            if versus:
                entry["speech"]["vs_harvest_reference"] = versus
        results[method] = entry
    return {
        "benchmark": "bench_f0",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "synthetic_clips": [name for name, _, _ in synthetic], "synthetic_clip_seconds": duration,
        "speech_clips": {name: round(len(audio) / 16000, 2) for name, audio in speech},
        "speech_accuracy_reference": "harvest (not ground truth)",
        "rmvpe_weights": rmvpe_weights or "random (speed only)",
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(F0_METHODS), help="comma-separated subset of F0_METHODS")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per synthetic clip")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-speech", action="store_true", help="skip the espeak-ng speech set")
    parser.add_argument("--rmvpe", default=None, metavar="PATH",
                        help="real RMVPE weights (rmvpe.pt, a folder holding it, or a Hub id): rmvpe gets accuracy "
                             "rows too; without it rmvpe runs with random weights, speed only")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(F0_METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(F0_METHODS)}")
    if args.rmvpe is not None:
        try:
            args.rmvpe = str(resolve_rmvpe_file(args.rmvpe))
        except RMVPELoadError as error:
            parser.error(str(error))
    torch.set_num_threads(args.threads)
    print(json.dumps(run(methods, args.duration, not args.no_speech, args.rmvpe), indent=2))


if __name__ == "__main__":
    main()
