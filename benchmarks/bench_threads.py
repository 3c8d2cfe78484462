"""Seconds per training step with the default CPU thread count vs hand-set OMP_NUM_THREADS, side by side.

Each run is a fresh process (OpenMP reads OMP_NUM_THREADS once, at start) that builds the real trainer
(`RVCTrainer`: accelerator, thread policy of `rvc_peft.runtime.configure_threads`, data loader, adapter, optimisers)
on the real v2 40k architecture with random weights and a synthetic dataset, then times `--steps` updates
(data loading + `train_step`) after one warm-up update. Settings compared for each `--loss`:

* default: OMP_NUM_THREADS and MKL_NUM_THREADS unset (what `rvc-peft train` / `python -m rvc_peft.train` do);
* OMP_NUM_THREADS=1, OMP_NUM_THREADS=2 (and any `--threads` given).

Written to `--out` (default benchmarks/results/threads_cpu.json): per loss and setting the median and min wall
seconds per step, process CPU seconds per step, the thread count the trainer chose, and the ratio of the default's
median to the best setting's (goal: at most 1.1). Measure on an otherwise idle machine: other busy programs change
both the timings and (by design) the default's thread count, which is recorded as `busy_cores_before`.

    python benchmarks/bench_threads.py [--steps 4] [--loss full mel_kl] [--threads 1 2] [--segment_frames 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker(base: str, discriminator: str, data: str, loss: str, steps: int, segment_frames: int,
           batch_size: int) -> dict:
    """Build the trainer as a training run does and time `steps` updates after one warm-up update."""
    import torch

    from rvc_peft.training import parse_args
    from rvc_peft.training.trainer import RVCTrainer

    os.environ["ACCELERATE_USE_CPU"] = "1"
    argv = ["--pretrained_model_name_or_path", base, "--train_data_dir", data, "--output_dir",
            tempfile.mkdtemp(prefix="bench-threads-"), "--train_batch_size", str(batch_size), "--segment_frames",
            str(segment_frames), "--report_to", "none", "--num_validation_clips", "0", "--max_train_steps", "1000",
            "--loss", loss]
    if loss == "full":
        argv += ["--pretrained_discriminator", discriminator]
    trainer = RVCTrainer(parse_args(argv))
    times, cpu_times = [], []
    epoch = 0
    while len(times) < steps + 1:
        trainer.sampler.set_epoch(epoch)
        epoch += 1
        batches = iter(trainer.dataloader)
        while len(times) < steps + 1:
            start, cpu_start = time.perf_counter(), time.process_time()
            batch = next(batches, None)
            if batch is None:
                break
            trainer.train_step(batch)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    times, cpu_times = times[1:], cpu_times[1:]  # the first update allocates optimiser state, warms kernels up
    return {"torch_threads": torch.get_num_threads(), "step_seconds_median": round(statistics.median(times), 3),
            "step_seconds_min": round(min(times), 3),
            "step_cpu_seconds_median": round(statistics.median(cpu_times), 3), "steps": len(times)}


def _run(setting: str, threads: int | None, assets: tuple[Path, Path, Path], args: argparse.Namespace,
         loss: str) -> dict:
    from rvc_peft.runtime import busy_cores

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    busy = busy_cores(1.0)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({
        "base": str(assets[0]), "discriminator": str(assets[1]), "data": str(assets[2]), "loss": loss,
        "steps": args.steps, "segment_frames": args.segment_frames, "batch_size": args.batch_size})]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{setting} ({loss}) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["busy_cores_before"] = None if busy is None else round(busy, 2)
    print(f"{loss:7s} {setting:18s} {result['step_seconds_median']:7.3f} s/step "
          f"({result['torch_threads']} thread(s), CPU {result['step_cpu_seconds_median']:.3f} s/step)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed updates per run (after one warm-up)")
    parser.add_argument("--loss", nargs="+", default=["full", "mel_kl"], choices=("full", "mel_kl", "mel"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="OMP_NUM_THREADS values to compare with the default")
    parser.add_argument("--segment_frames", type=int, default=32, help="training window (32: the 40k default)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each synthetic slice")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "threads_cpu.json"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(**json.loads(args.worker))))
        return

    from bench_train import _make_assets

    from rvc_peft.runtime import available_cores

    with tempfile.TemporaryDirectory(prefix="bench-threads-") as folder:
        assets = _make_assets(Path(folder), args.seconds, rows=4)
        results: dict = {}
        for loss in args.loss:
            runs = {"default": _run("default", None, assets, args, loss)}
            for threads in args.threads:
                runs[f"OMP_NUM_THREADS={threads}"] = _run(f"OMP_NUM_THREADS={threads}", threads, assets, args, loss)
            best = min(runs, key=lambda name: runs[name]["step_seconds_median"])
            ratio = runs["default"]["step_seconds_median"] / runs[best]["step_seconds_median"]
            results[loss] = {"runs": runs, "best": best, "default_over_best": round(ratio, 3)}
            print(f"{loss}: best {best}; default/best = {ratio:.2f} (goal <= 1.1)", flush=True)
    report = {
        "benchmark": "benchmarks/bench_threads.py", "machine": platform.processor() or platform.machine(),
        "cores_available": available_cores(), "command": " ".join(sys.argv),
        "settings": {"steps": args.steps, "segment_frames": args.segment_frames, "batch_size": args.batch_size,
                     "seconds_per_slice": args.seconds, "model": "RVC v2 40k (random weights), LoRA preset all r8"},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
