"""Training cost of LoRA voice adapters vs RVC's full fine-tuning, on the real v2 40k architecture, printed as JSON.

Every configuration runs the real training step (`RVCTrainer.train_step`: generator forward, discriminator step,
generator step with RVC's full objective, AdamW) on the same synthetic batch stream, in its own fresh process so that
peak memory is its own:

* LoRA on the generator, ranks 4/8/16 x presets generator, flow, encoder, all — with the discriminator trained fully
  (the default recipe, as RVC) — plus the default adapter with a frozen discriminator and with a discriminator
  adapter (`--discriminator_mode frozen` / `lora`);
* full fine-tuning of G and D, RVC's recipe (every weight trainable, weight norm kept).

Reported per configuration: trainable parameters (G, D), bytes of a checkpoint's trainable tensors + AdamW state,
median/min seconds per step, and peak memory: on a GPU `torch.cuda.max_memory_allocated`, on the CPU the process's
peak RSS (VmHWM) and its increase over the RSS right after the models were built (weights + activations +
gradients + optimiser state). On the CPU the process CPU time per step is reported too (with `--threads 1` it is
what the step costs on an idle core, whatever else runs on the machine). Random weights; nothing is downloaded.

    python benchmarks/bench_train.py [--segment_frames 8] [--steps 2] [--threads 1] [--device cpu] [--quick]
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESETS = ("generator", "flow", "encoder", "all")
RANKS = (4, 8, 16)


def _configurations(quick: bool) -> list[dict]:
    runs = [{"name": "full fine-tuning G+D (RVC)", "mode": "full"}]
    ranks = (8,) if quick else RANKS
    for preset in PRESETS:
        for rank in ranks:
            runs.append({"name": f"LoRA {preset} r{rank} + full D", "mode": "lora", "preset": preset, "rank": rank,
                         "discriminator_mode": "full"})
    runs.append({"name": "LoRA generator r8 + frozen D", "mode": "lora", "preset": "generator", "rank": 8,
                 "discriminator_mode": "frozen"})
    runs.append({"name": "LoRA generator r8 + LoRA D r8", "mode": "lora", "preset": "generator", "rank": 8,
                 "discriminator_mode": "lora"})
    return runs


def _make_assets(folder: Path, seconds: float, rows: int) -> tuple[Path, Path, Path]:
    """A random v2 40k base G file, a random v2 D file and a synthetic dataset of `rows` slices."""
    from rvc_peft.checkpoints import save_rvc_checkpoint
    from rvc_peft.data.dataset import DatasetWriter, RVCDatasetInfo
    from rvc_peft.features.pitch import f0_to_coarse
    from rvc_peft.features.synthetic import voiced_signal
    from rvc_peft.models import MultiPeriodDiscriminator, RVCConfig
    from rvc_peft.testing import random_synthesizer

    config = RVCConfig.from_preset("40k", "v2", use_f0=True)
    base = save_rvc_checkpoint(random_synthesizer(config), folder / "f0G40k.pth", kind="base")
    torch.manual_seed(0)
    discriminator = save_rvc_checkpoint(MultiPeriodDiscriminator("v2"), folder / "f0D40k.pth", kind="base")
    rng = np.random.default_rng(0)
    with DatasetWriter(folder / "data", config.content_dim, True) as writer:
        for i in range(rows):
            audio, f0 = voiced_signal(110.0 + 30 * i, seconds, sample_rate=config.sampling_rate, seed=i)
            f0_100 = np.interp(np.arange(int(seconds * 100) + 1), np.arange(len(f0)), f0).astype(np.float32)
            writer.add({"audio": audio, "phone": rng.standard_normal((int(seconds * 50) - 1, 768)).astype(np.float32),
                        "pitch": f0_to_coarse(f0_100), "pitchf": f0_100, "speaker_id": 0,
                        "source_file": f"{i}.wav", "offset": 0.0, "slice_index": i})
        writer.finish(RVCDatasetInfo(sample_rate=40000, version="v2", use_f0=True, f0_method="synthetic",
                                     content_encoder="synthetic", content_dim=768, hop_length=400))
    return base, discriminator, folder / "data"


def _status_mb(field: str) -> float:
    """A memory figure of this process from Linux's /proc/self/status (VmRSS: now, VmHWM: peak), in MB.

    Not `ru_maxrss`: Linux carries the parent's peak across the vfork+exec that `subprocess` uses, so a worker
    would report the parent's memory whenever the parent was larger.
    """
    with open("/proc/self/status") as handle:
        return int(handle.read().split(f"{field}:")[1].split()[0]) / 1024


def worker(spec: dict, base: str, discriminator: str, data: str, segment_frames: int, steps: int, device: str) -> dict:
    """Build one configuration and time `steps` training steps (after one warm-up step)."""
    from rvc_peft.training import parse_args
    from rvc_peft.training import trainer as trainer_module

    argv = ["--pretrained_model_name_or_path", base, "--train_data_dir", data, "--pretrained_discriminator",
            discriminator, "--output_dir", tempfile.mkdtemp(prefix="bench-train-"), "--train_batch_size", "1",
            "--segment_frames", str(segment_frames), "--report_to", "none", "--num_validation_clips", "0",
            "--max_train_steps", "1000", "--discriminator_mode", spec.get("discriminator_mode", "full"),
            "--lora_preset", spec.get("preset", "generator"), "--rank", str(spec.get("rank", 8))]
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    args = parse_args(argv)
    if spec["mode"] == "full":
        # RVC's recipe: every generator weight trains (weight norm kept); same loop, same losses
        trainer_module.build_generator = lambda base_model, _args: base_model.train().requires_grad_(True)
    trainer = trainer_module.RVCTrainer(args)
    generator = trainer.accelerator.unwrap_model(trainer.net_g)
    trainable_g = sum(p.numel() for p in generator.parameters() if p.requires_grad)
    trainable_d = sum(p.numel() for p in trainer.d_module.parameters() if p.requires_grad)
    cuda = trainer.accelerator.device.type == "cuda"
    trainer.sampler.set_epoch(0)
    batches = [{k: v.to(trainer.accelerator.device) for k, v in b.items()} for b in trainer.dataloader]
    rss_built = _status_mb("VmRSS")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for i in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train_step(batches[i % len(batches)])
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first step allocates optimiser state and warms kernels up
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    optimizer_bytes = sum(t.numel() * t.element_size() for opt in (trainer.optimizer_g, trainer.optimizer_d)
                          if opt is not None for state in opt.state.values() for t in state.values()
                          if torch.is_tensor(t))
    trainable_bytes = 4 * (trainable_g + trainable_d)
    result = {
        **spec, "trainable_parameters_g": trainable_g, "trainable_parameters_d": trainable_d,
        "checkpoint_mb": round((trainable_bytes + optimizer_bytes) / 2**20, 2),
        "step_seconds_median": round(statistics.median(times), 3), "step_seconds_min": round(min(times), 3),
        # CPU time of this process per step: on a shared, busy machine a steadier measure of the work than wall time
        "step_cpu_seconds_median": round(statistics.median(cpu_times), 3),
    }
    if cuda:
        result["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        peak = _status_mb("VmHWM")
        result.update(peak_rss_mb=round(peak, 1), rss_after_build_mb=round(rss_built, 1),
                      training_rss_increase_mb=round(peak - rss_built, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment_frames", type=int, default=8, help="decoder window (RVC 40k: 32 = 0.32 s)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after 1 warm-up)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each synthetic slice")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="rank 8 only (7 configurations instead of 15)")
    parser.add_argument("--only", default=None, help="comma-separated name fragments: run only matching configurations "
                                                     "(the full fine-tuning baseline always runs)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        spec, base, discriminator, data = json.loads(args.worker)
        print(json.dumps(worker(spec, base, discriminator, data, args.segment_frames, args.steps, args.device)))
        return
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base, discriminator, data = _make_assets(Path(tmp), args.seconds, rows=4)
        wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
        for spec in _configurations(args.quick):
            if wanted and spec["mode"] != "full" and not any(w in spec["name"].lower() for w in wanted):
                continue
            payload = json.dumps([spec, str(base), str(discriminator), str(data)])
            command = [sys.executable, __file__, "--worker", payload, "--segment_frames", str(args.segment_frames),
                       "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                results.append({**spec, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"})
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{spec['name']}: {results[-1].get('step_seconds_median', results[-1].get('error'))}",
                  file=sys.stderr)
    full = next(r for r in results if r["mode"] == "full" and "error" not in r)
    for row in results:
        if "error" not in row and row is not full:
            row["step_time_vs_full"] = round(row["step_seconds_median"] / full["step_seconds_median"], 3)
            memory = "gpu_peak_allocated_mb" if "gpu_peak_allocated_mb" in row else "training_rss_increase_mb"
            if full.get(memory):
                row["training_memory_vs_full"] = round(row[memory] / full[memory], 3)
    report = {
        "benchmark": "bench_train",
        "model": "RVC v2 40k with pitch (SynthesizerTrnMs768NSFsid) + MultiPeriodDiscriminatorV2, random weights",
        "batch": {"batch_size": 1, "segment_frames": args.segment_frames,
                  "segment_samples": args.segment_frames * 400, "slice_seconds": args.seconds},
        "steps_timed": args.steps, "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads,
                    "device": args.device,
                    "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"},
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
