"""Adapter size and inference cost on the full RVC v2 40k architecture (random weights), printed as JSON.

For each target preset and rank: the adapter file size (`adapter_model.safetensors` as `save_pretrained` writes it),
its ratio to the exported voice `.pth` (what RVC users share today), and the trainable-parameter share. Then the
forward (`infer`) time of the base model vs the same model with an unmerged adapter vs with the adapter merged,
measured in one run, interleaved, median of N repetitions.

    python benchmarks/bench_adapters.py [--frames 200] [--repeats 7] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft import get_peft_model

import rvc_peft.tuners  # noqa: F401  (registers the tuner)
from rvc_peft.checkpoints import export_rvc
from rvc_peft.models import RVCConfig
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora
from rvc_peft.tuners import RVCLoraConfig

PRESETS = ("generator", "generator+flow", "all")
RANKS = (4, 8, 16)


def sizes(base: torch.nn.Module, voice_bytes: int, folder: Path) -> list[dict]:
    total = sum(p.numel() for p in base.parameters())
    inference = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("enc_q."))
    rows = []
    for preset in PRESETS:
        for rank in RANKS:
            model = get_peft_model(base, RVCLoraConfig(target_modules=preset, r=rank, lora_alpha=2 * rank))
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            out = folder / f"{preset}-{rank}"
            model.save_pretrained(out)
            file_bytes = (out / "adapter_model.safetensors").stat().st_size
            rows.append({
                "preset": preset, "rank": rank, "lora_alpha": 2 * rank,
                "adapted_layers": sum(1 for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A),
                "trainable_parameters": trainable,
                "trainable_share_of_model": round(trainable / total, 5),
                "trainable_share_of_inference_weights": round(trainable / inference, 5),
                "adapter_file_bytes": file_bytes,
                "adapter_to_voice_pth_ratio": round(file_bytes / voice_bytes, 5),
            })
            base = model.unload()
    return rows


def timing(base: torch.nn.Module, config: RVCConfig, frames: int, repeats: int, device: str) -> dict:
    inputs = {k: v.to(device) for k, v in random_inputs(config, frames=frames).items()}
    base = base.to(device)
    model = get_peft_model(base, RVCLoraConfig())  # the default voice adapter: generator, r=8
    randomize_lora(model, seed=0, scale=0.01)

    def once(mode: str) -> float:
        torch.manual_seed(0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            if mode == "base":
                with model.disable_adapter():
                    model.infer(**inputs)
            else:
                model.infer(**inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    results: dict[str, list[float]] = {"base": [], "unmerged": [], "merged": []}
    for _ in range(2):  # warm-up
        once("base")
        once("unmerged")
    for _ in range(repeats):
        for mode in ("base", "unmerged"):
            results[mode].append(once(mode))
        model.merge_adapter()
        results["merged"].append(once("merged"))
        model.unmerge_adapter()
    median = {mode: statistics.median(values) for mode, values in results.items()}
    return {
        "adapter": "generator preset, r=8, alpha=16 (RVCLoraConfig defaults)",
        "audio_seconds": frames * config.hop_length / config.sampling_rate,
        "repeats": repeats,
        "median_seconds": {mode: round(value, 5) for mode, value in median.items()},
        "unmerged_over_base": round(median["unmerged"] / median["base"], 3),
        "merged_over_base": round(median["merged"] / median["base"], 3),
        "real_time_factor_base": round(median["base"] / (frames * config.hop_length / config.sampling_rate), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="feature frames per forward (100 = 1 s of audio)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = RVCConfig.from_preset("40k", "v2", use_f0=True)
    base = random_synthesizer(config)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        voice_bytes = export_rvc(base, folder / "voice.pth").stat().st_size
        size_rows = sizes(base, voice_bytes, folder)
    report = {
        "benchmark": "bench_adapters",
        "model": "RVC v2 40k with pitch (SynthesizerTrnMs768NSFsid), random weights",
        "model_parameters": sum(p.numel() for p in base.parameters()),
        "voice_pth_bytes": voice_bytes,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads, "device": args.device,
                    "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"},
        "sizes": size_rows,
        "timing": timing(base, config, args.frames, args.repeats, args.device),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
