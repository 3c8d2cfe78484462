"""Streaming conversion speed: algorithmic latency, per-block processing time and real-time factor, as JSON.

For each block size (default 250, 500 and 1000 ms; 1 s of context, 50 ms crossfade, 10 ms SOLA search) a synthetic
harmonic "speech" signal with pauses is streamed block by block through `StreamingConverter`, after one warm-up
stream. Per block: processing time mean / p95 / max, split into content encoder, pitch and synthesizer;
real-time factor = mean processing time / block duration (below 1 keeps up; the end-to-end latency of a live stream
is about the algorithmic latency plus the processing time of one block, plus the audio device's buffers).

Models:
* `lab`: the voice-lab base shipped with rvc-peft (RVC v2 32k, 13.5 M parameters, MFCC content encoder), with
  each pitch method of `--lab-f0` (pm, dio and fcpe are CPU-cheap; harvest is not);
* `v2-40k`: RVC's real-size v2 40k synthesizer, a HuBERT-base-geometry content encoder (12 x 768) and the RMVPE
  network, all with random weights (no downloads; speed does not depend on weight values) - what a real RVC voice
  costs. Skipped with `--no-real-size`.

    python benchmarks/bench_streaming.py --out benchmarks/results/streaming.json   # idle machine, a few minutes
    python benchmarks/bench_streaming.py --quick                                   # seconds: a smoke test

`rvc_peft.runtime.retain_freed_memory()` is applied on the CPU, as the CLI does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import StreamingConverter, VoiceConverter, stream_file
from rvc_peft.runtime import retain_freed_memory


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    gaps = [(t + 0.55, t + 0.75) for t in np.arange(0.0, seconds, 0.9)]
    audio, _ = voiced_signal(140.0, seconds, seed=seed, unvoiced_gaps=gaps, noise_level=0.002)
    return audio


def lab_converter(f0_method: str, device: str, backend: str, precision: str) -> VoiceConverter:
    from rvc_peft.lab.assets import lab_base_files

    lab = lab_base_files()
    return VoiceConverter.from_pretrained(lab.synthesizer, content_encoder=str(lab.content_encoder),
                                          f0_method=f0_method, device=device, seed=0, backend=backend,
                                          precision=precision)


def real_size_converter(device: str, quick: bool, backend: str, precision: str) -> VoiceConverter:
    """RVC v2 40k + HuBERT-base geometry + RMVPE, random weights (tiny stand-ins with --quick)."""
    from transformers import HubertConfig, HubertModel

    from rvc_peft.features.content_encoder import ContentEncoder
    from rvc_peft.features.rmvpe import E2E, RMVPE
    from rvc_peft.models import RVCConfig
    from rvc_peft.testing import random_synthesizer, small_config, tiny_content_encoder

    torch.manual_seed(0)
    if quick:
        config = small_config("v1", True, 40000)
        encoder = tiny_content_encoder()
        rmvpe = RMVPE(E2E(n_blocks=1, en_de_layers=2, inter_layers=1))
    else:
        config = RVCConfig.from_preset("40k", "v2", True)
        encoder = ContentEncoder(HubertModel(HubertConfig()).eval(), torch.nn.Linear(768, 256), "v2", kind="contentvec")
        rmvpe = RMVPE(E2E())
    encoder = encoder.to(device).eval().requires_grad_(False)
    return VoiceConverter(random_synthesizer(config, seed=0).to(device), encoder, f0_method="rmvpe",
                          rmvpe_model=rmvpe.to(device).eval(), seed=0, backend=backend, precision=precision)


def measure(converter: VoiceConverter, audio: np.ndarray, block_ms: float, extra_ms: float,
            crossfade_ms: float) -> dict:
    streamer = StreamingConverter(converter, block_seconds=block_ms / 1000, extra_seconds=extra_ms / 1000,
                                  crossfade_seconds=crossfade_ms / 1000)
    stream_file(streamer, audio[: 3 * streamer.input_block_samples])  # warm-up: allocations, lazy imports
    started = time.perf_counter()
    report = stream_file(streamer, audio).report
    report["wall_s"] = round(time.perf_counter() - started, 3)
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks-ms", type=float, nargs="+", default=[250.0, 500.0, 1000.0])
    parser.add_argument("--extra-ms", type=float, default=1000.0, help="past context per block (default 1000)")
    parser.add_argument("--crossfade-ms", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio streamed per measurement (default 10)")
    parser.add_argument("--lab-f0", nargs="+", default=["pm", "dio", "fcpe", "harvest"],
                        help="pitch methods measured on the voice-lab base")
    parser.add_argument("--backends", nargs="+", default=["torch/fp32", "torch-fast/fp32", "torch-fast/bf16"],
                        help="synthesizer backend/precision pairs (VoiceConverter's backend=, precision=); "
                             "bf16 is skipped on CPUs without avx512_bf16/AMX")
    parser.add_argument("--no-real-size", action="store_true", help="skip the real-size v2 40k measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="short audio, one block size, tiny real-size stand-in")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.quick:
        args.blocks_ms, args.seconds, args.lab_f0 = [500.0], 2.0, args.lab_f0[:1]
    allocator = "retain_freed_memory" if args.device.startswith("cpu") and retain_freed_memory() else "default"
    audio = speech_like(args.seconds)
    result: dict = {
        "benchmark": "bench_streaming",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "allocator": allocator,
        "audio": f"{args.seconds:g} s synthetic harmonic speech-like signal with pauses, 16 kHz",
        "settings": {"extra_ms": args.extra_ms, "crossfade_ms": args.crossfade_ms, "sola_search_ms": 10.0},
        "quick": args.quick,
        "runs": [],
    }
    from rvc_peft.inference.fast_path import mkldnn_bf16_supported

    backends = [tuple(b.split("/")) for b in args.backends]
    if args.device.startswith("cpu") and not mkldnn_bf16_supported():
        backends = [b for b in backends if b[1] != "bf16"]
    models = [(f"lab v2 32k, f0 {method}", lambda b, p, m=method: lab_converter(m, args.device, b, p))
              for method in args.lab_f0]
    if not args.no_real_size:
        name = "tiny v1 40k stand-in, f0 rmvpe (tiny)" if args.quick else \
            "real-size v2 40k + HuBERT-base geometry + RMVPE, random weights"
        models.append((name, lambda b, p: real_size_converter(args.device, args.quick, b, p)))
    for name, build in models:
        for backend, precision in backends:
            converter = build(backend, precision)
            for block_ms in args.blocks_ms:
                row = {"model": name, "backend": backend, "precision": precision,
                       **measure(converter, audio, block_ms, args.extra_ms, args.crossfade_ms)}
                print(json.dumps(row), file=sys.stderr)
                result["runs"].append(row)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from rvc_peft.utils.files import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    return result


if __name__ == "__main__":
    main()
