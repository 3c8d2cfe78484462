"""Conversion speed of rvc_peft's RVC pipeline, printed as JSON.

* real-time factor (processing seconds / audio seconds; < 1 is faster than real time) for 10 s and 60 s of audio
  with the real v2 40k synthesizer, split into content encoder (a base-size HuBERT, 12 × 768), pitch (RMVPE, the real
  E2E network, on the whole padded file as RVC does) and synthesizer (+ retrieval and post-processing);
* the same for the base alone, an unmerged LoRA voice and a merged one (VoiceBank's fast path);
* switching voices (PEFT set_adapter, and with merging) and adding one from disk vs loading an exported `.pth`;
* on the CPU, the base conversion of the first duration with glibc's default allocator vs
  `rvc_peft.runtime.retain_freed_memory()` (what `rvc-peft convert` uses), each in a fresh process.

All weights are random (no downloads): speed does not depend on their values. Fixed seeds; audio is a synthetic
harmonic "speech" signal with pauses so long inputs are segmented at quiet points as usual.

    python benchmarks/bench_convert.py [--durations 10 60] [--device cpu|cuda] [--preset generator] [--rank 8]
    python benchmarks/bench_convert.py --quick     # tiny models, seconds: a smoke test of this script

The main measurements run with `retain_freed_memory()` applied (as the CLI does); `--default-allocator` runs them
without it.
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
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvc_peft.checkpoints import load_synthesizer
from rvc_peft.features.content_encoder import ContentEncoder
from rvc_peft.features.rmvpe import E2E, RMVPE
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import VoiceBank, VoiceConverter
from rvc_peft.models import RVCConfig
from rvc_peft.runtime import retain_freed_memory
from rvc_peft.testing import random_synthesizer, randomize_lora, small_config, tiny_content_encoder
from rvc_peft.tuners import RVCLoraConfig, export_merged_voice, get_rvc_peft_model


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    gaps = [(t + 0.55, t + 0.75) for t in np.arange(0.0, seconds, 0.9)]
    audio, _ = voiced_signal(140.0, seconds, seed=seed, unvoiced_gaps=gaps, noise_level=0.002)
    return audio


def content_encoder(quick: bool, device: str) -> ContentEncoder:
    if quick:
        return tiny_content_encoder().to(device)
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    # HuBERT-base / ContentVec geometry: 7 convs of 512, 12 layers of 768; v2 reads the 768-d layer-12 output
    encoder = ContentEncoder(HubertModel(HubertConfig()).eval(), torch.nn.Linear(768, 256), "v2", kind="contentvec")
    return encoder.to(device).eval().requires_grad_(False)


def synthesizer_config(quick: bool) -> RVCConfig:
    return small_config("v1", True, 40000) if quick else RVCConfig.from_preset("40k", "v2", True)


def make_adapter(config: RVCConfig, folder: Path, seed: int, preset: str, rank: int) -> None:
    model = get_rvc_peft_model(random_synthesizer(config, seed=0),
                               RVCLoraConfig(target_modules=preset, r=rank, lora_alpha=2 * rank))
    randomize_lora(model, seed=seed, scale=0.01, parameters="lora_B")
    model.save_pretrained(str(folder))


def timed_conversion(converter: VoiceConverter, audio: np.ndarray, voice: str | None, repeats: int) -> dict:
    """Best of `repeats` runs (after one warm-up for short inputs): per-stage seconds and real-time factors."""
    runs = []
    for _ in range(repeats):
        converter.convert(audio, voice=voice)
        runs.append(converter.last_timings.as_dict())
        if converter.device.type == "cuda":
            torch.cuda.synchronize()
    best = min(runs, key=lambda r: r["total"])
    seconds = best["audio_seconds"]
    stages = ("content_encoder", "pitch", "synthesizer", "retrieval", "postprocess")
    return {
        "total_s": round(best["total"], 3),
        "rtf": round(best["total"] / seconds, 4),
        "rtf_by_stage": {stage: round(best[stage] / seconds, 4) for stage in stages},
        "segments": best["segments"],
    }


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


def allocator_comparison(seconds: float, quick: bool) -> dict:
    """Base conversion of `seconds` of audio in two fresh processes: glibc's default allocator vs retained memory."""
    runs = {}
    for mode in ("default", "retained"):
        command = [sys.executable, __file__, "--durations", str(seconds), "--base-only", "--repeats", "1"]
        command += ["--quick"] * quick + ["--default-allocator"] * (mode == "default")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs[mode] = json.loads(done.stdout)["rtf"][f"{seconds:g}s"]["base"]
    return {"audio_s": seconds, "default": runs["default"], "retained": runs["retained"],
            "retained_over_default": round(runs["retained"]["total_s"] / runs["default"]["total_s"], 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0], help="seconds of audio")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="generator", help="LoRA target preset of the benchmark voices")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement (best is kept)")
    parser.add_argument("--quick", action="store_true", help="tiny models: check the script runs")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--default-allocator", action="store_true",
                        help="do not apply rvc_peft.runtime.retain_freed_memory()")
    parser.add_argument("--base-only", action="store_true", help=argparse.SUPPRESS)  # allocator_comparison's runs
    args = parser.parse_args(argv)
    allocator = "glibc default" if args.default_allocator or not retain_freed_memory() else "retain_freed_memory"
    warnings.filterwarnings("ignore")
    device = args.device
    config = synthesizer_config(args.quick)
    encoder = content_encoder(args.quick, device)
    torch.manual_seed(0)
    rmvpe = RMVPE(E2E(n_blocks=1, en_de_layers=2, inter_layers=1) if args.quick else E2E()).to(device).eval()

    result: dict = {
        "benchmark": "bench_convert",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "model": f"RVC {config.version} {config.sample_rate_name} with pitch ({'tiny' if args.quick else 'full size'})",
        "content_encoder": "tiny HuBERT" if args.quick else "HuBERT-base geometry (12 x 768), random weights",
        "pitch_method": "rmvpe (E2E network, random weights, whole padded file)",
        "adapter": {"preset": args.preset, "rank": args.rank},
        "window": "fp32 constants (x_pad 1, x_query 6, x_center 38, x_max 41)",
        "allocator": allocator,
        "rtf": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, seed in (("alice", 1), ("bob", 2)):
            make_adapter(config, tmp / name, seed, args.preset, args.rank)

        plain = VoiceConverter(random_synthesizer(config, seed=0).to(device), encoder, f0_method="rmvpe",
                               rmvpe_model=rmvpe, seed=0)
        plain.voices.base.remove_posterior_encoder()
        bank = VoiceBank(random_synthesizer(config, seed=0).to(device))
        bank.base.remove_posterior_encoder()
        started = time.perf_counter()
        bank.add_voice(tmp / "alice")
        add_voice_ms = 1000 * (time.perf_counter() - started)
        bank.add_voice(tmp / "bob")
        voices = VoiceConverter(bank, encoder, f0_method="rmvpe", rmvpe_model=rmvpe, seed=0)

        for seconds in args.durations:
            audio = speech_like(seconds)
            if seconds <= 15:
                plain.convert(audio[: 16000 * 2])  # warm-up (allocator, lazy imports)
            repeats = args.repeats if seconds <= 15 else 1
            row = {"base": timed_conversion(plain, audio, None, repeats)}
            if args.base_only:
                result["rtf"][f"{seconds:g}s"] = row
                continue
            voices.merge_single_voice = False
            row["lora_unmerged"] = timed_conversion(voices, audio, "alice", repeats)
            voices.merge_single_voice = True
            row["lora_merged"] = timed_conversion(voices, audio, "alice", repeats)
            row["unmerged_over_base"] = round(row["lora_unmerged"]["total_s"] / row["base"]["total_s"], 3)
            row["merged_over_base"] = round(row["lora_merged"]["total_s"] / row["base"]["total_s"], 3)
            result["rtf"][f"{seconds:g}s"] = row
            print(f"{seconds:g} s done: {json.dumps(row)}", file=sys.stderr)

        if args.base_only:
            print(json.dumps(result))
            return result
        bank.activate("alice")

        def switch_pair() -> None:
            bank.activate("bob")
            bank.activate("alice")

        def switch_pair_merged() -> None:
            bank.activate("bob", merge=True)
            bank.activate("alice", merge=True)

        switch = median_ms(switch_pair, 20) / 2
        switch_merged = median_ms(switch_pair_merged, 10) / 2
        export_merged_voice(random_synthesizer(config, seed=0), tmp / "alice", tmp / "alice.pth")
        load_pth_ms = median_ms(lambda: load_synthesizer(tmp / "alice.pth", device=device), 3)
        result["voice_switch"] = {
            "set_adapter_ms": round(switch, 3),
            "switch_with_merge_ms": round(switch_merged, 3),
            "add_voice_from_disk_ms": round(add_voice_ms, 1),
            "load_exported_pth_ms": load_pth_ms,
            "exported_pth_mb": round((tmp / "alice.pth").stat().st_size / 1e6, 2),
            "adapter_mb": round(sum(p.stat().st_size for p in (tmp / "alice").iterdir()) / 1e6, 2),
            "load_pth_over_switch": round(load_pth_ms / max(switch, 1e-6), 1),
        }
    if device == "cpu" and sys.platform.startswith("linux"):
        result["allocator_comparison"] = allocator_comparison(args.durations[0], args.quick)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
