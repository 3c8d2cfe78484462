"""Synthesizer speed: RVC's own model code vs ours (reference path, fast path fp32/bf16, ONNX Runtime), and conversion.

All variants run the same weights (a full-size RVC v2 40k model with pitch, random weights with a unit-gain decoder so
the output is audible) on the same input (10 s: 1000 frames of random content features and a voiced F0 contour),
side by side in one process, interleaved (A B C A B C ...), with the noise seeded the same; the median of the repeats
is reported with its ratio to RVC's time, and each output's max abs difference and log-mel distance (dB, the measure
of tests/inference/test_streaming.py) to our reference path's output.

* "rvc": `rvc.lib.infer_pack.models.SynthesizerTrnMs768NSFsid.infer` (RVC's code: weight norm recomputed per call);
* "reference": `RVCSynthesizer.infer` with weight norm folded (as `VoiceBank` runs it);
* "fast_fp32" / "fast_bf16" / "fast_fp16": `optimize_for_inference(model, dtype)` (bf16 where the CPU has it);
* "fast_fp32_compiled": the same under `torch.compile` (`--compile`; compile time reported separately);
* "onnx": the webui-layout export run by onnxruntime (CPU provider; the CUDA one with `--device cuda`).

Then the conversion real-time factor (`VoiceConverter.convert`, RMVPE pitch and a HuBERT-base-sized content encoder,
the setup of bench_convert.py) for each backend at 10 s and 60 s, interleaved too.

    python benchmarks/bench_synthesizer.py --out benchmarks/results/synthesizer_cpu.json
    python benchmarks/bench_synthesizer.py --device cuda --compile --out benchmarks/results/synthesizer_cuda.json
    python benchmarks/bench_synthesizer.py --quick      # tiny model, seconds: a smoke test of this script
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_convert import content_encoder, speech_like, synthesizer_config

from rvc_peft.features.rmvpe import E2E, RMVPE
from rvc_peft.inference import VoiceConverter
from rvc_peft.inference.evaluation import log_mel_distance_db
from rvc_peft.inference.fast_path import mkldnn_bf16_supported, optimize_for_inference
from rvc_peft.models import RVCConfig
from rvc_peft.models.weight_norm import split_weight
from rvc_peft.runtime import retain_freed_memory
from rvc_peft.testing import random_inputs, small_config, unit_gain_synthesizer

RVC_CLASSES = {("v1", True): "SynthesizerTrnMs256NSFsid", ("v1", False): "SynthesizerTrnMs256NSFsid_nono",
               ("v2", True): "SynthesizerTrnMs768NSFsid", ("v2", False): "SynthesizerTrnMs768NSFsid_nono"}


def rvc_model(ours: torch.nn.Module, config: RVCConfig, device: str) -> torch.nn.Module | None:
    """RVC's own class with our (folded) weights, put back into RVC's weight_g/weight_v form; None without `rvc`."""
    try:
        from rvc.lib.infer_pack import models as rvc_models
    except ImportError:
        return None
    model = getattr(rvc_models, RVC_CLASSES[(config.version, config.use_f0)])(*config.to_rvc_list(), is_half=False)
    ours_state = ours.state_dict()
    state = {}
    for key in model.state_dict():
        if key.endswith((".weight_g", ".weight_v")):
            g, v = split_weight(ours_state[key[: -len(".weight_g")] + ".weight"])
            state[key] = g if key.endswith("_g") else v
        else:
            state[key] = ours_state[key]
    model.load_state_dict(state, strict=True)
    del model.enc_q  # RVC's pipeline deletes it the same way
    return model.to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(variants: dict[str, Callable[[], torch.Tensor]], repeats: int, device: str,
                seed: int = 0) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Run every variant once per round (A B C A B C ...), seeded identically; (seconds per run, last outputs)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in variants.items():
            torch.manual_seed(seed)
            sync(device)
            started = time.perf_counter()
            audio = run()
            sync(device)
            times[name].append(time.perf_counter() - started)
            outputs[name] = audio.reshape(-1).float().cpu().numpy()
    return times, outputs


def synthesizer_rows(config: RVCConfig, frames: int, repeats: int, device: str, compile: bool,
                     tmp: Path) -> dict:
    torch.manual_seed(0)
    ours = unit_gain_synthesizer(copy.deepcopy(config)).to(device)  # folded weight norm, unit-gain decoder, posterior encoder kept
    inputs = {k: v.to(device) for k, v in random_inputs(config, frames=frames).items()}
    rvc = rvc_model(ours, config, device)
    ours.remove_posterior_encoder()
    variants: dict[str, Callable[[], torch.Tensor]] = {}
    notes: dict[str, str] = {}
    if rvc is not None:
        args = [inputs[k] for k in ("phone", "phone_lengths", "pitch", "nsff0", "sid") if k in inputs]
        variants["rvc"] = lambda: rvc.infer(*args)[0]
    else:
        notes["rvc"] = "RVC's code is not installed (pip install --no-deps rvc)"
    variants["reference"] = lambda: ours.infer(**inputs)[0]
    fast = {"fp32": optimize_for_inference(ours)}
    if device == "cpu":
        if mkldnn_bf16_supported():
            fast["bf16"] = optimize_for_inference(ours, torch.bfloat16)
        else:
            notes["fast_bf16"] = "skipped: this CPU has no avx512_bf16/AMX"
    else:
        fast["bf16"] = optimize_for_inference(ours, torch.bfloat16)
        fast["fp16"] = optimize_for_inference(ours, torch.float16)
    for precision, model in fast.items():
        variants[f"fast_{precision}"] = (lambda m=model: m.infer(**inputs)[0])
    compile_s = None
    if compile:
        compiled = optimize_for_inference(ours, compile=True)
        started = time.perf_counter()
        with torch.no_grad():
            compiled.infer(**inputs)
        compile_s = round(time.perf_counter() - started, 1)
        variants["fast_fp32_compiled"] = lambda: compiled.infer(**inputs)[0]
    try:
        from rvc_peft.inference.onnx_export import OnnxSynthesizer, export_onnx

        path = export_onnx(ours, tmp / "model.onnx", layout="webui")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
        onnx = OnnxSynthesizer(path, providers=providers)
        cpu_inputs = {k: v.cpu() for k, v in inputs.items()}

        def run_onnx() -> torch.Tensor:
            rnd = torch.randn(1, config.inter_channels, frames, device=device).cpu()  # the reference's draw
            return onnx.infer(**cpu_inputs, rnd=rnd)[0]

        variants["onnx"] = run_onnx
    except ImportError as err:
        notes["onnx"] = f"skipped: {err}"
    with torch.no_grad():
        for run in variants.values():  # warm-up (allocator, oneDNN kernel creation, ORT arena)
            torch.manual_seed(0)
            run()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times, outputs = interleaved(variants, repeats, device)
    reference = outputs["reference"]
    rvc_median = statistics.median(times["rvc"]) if "rvc" in times else None
    rows = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows[name] = {
            "median_s": round(median, 3),
            "runs_s": [round(s, 3) for s in seconds],
            "ratio_to_rvc": round(median / rvc_median, 3) if rvc_median else None,
            "max_abs_diff_vs_reference": float(f"{np.abs(outputs[name] - reference).max():.3g}"),
            "log_mel_db_vs_reference": round(log_mel_distance_db(outputs[name], reference, config.sampling_rate), 4),
        }
    result = {"frames": frames, "audio_seconds": frames / 100, "rows": rows, "notes": notes}
    if compile_s is not None:
        result["compile_seconds_first_call"] = compile_s
    if device.startswith("cuda"):
        result["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def converted(converter: VoiceConverter, audio: np.ndarray) -> tuple[np.ndarray, dict]:
    """One conversion: (output, {total_s, rtf, synthesizer_rtf, segments}) from the converter's stage timings."""
    output = converter.convert(audio)[0]
    timings = converter.last_timings
    return output, {"total_s": round(timings.total, 3), "rtf": round(timings.total / timings.audio_seconds, 4),
                    "synthesizer_rtf": round(timings.synthesizer / timings.audio_seconds, 4),
                    "segments": timings.segments}


def conversion_rows(config: RVCConfig, durations: list[float], repeats: int, device: str, quick: bool,
                    backends: list[tuple[str, str]]) -> dict:
    encoder = content_encoder(quick, device)
    config = synthesizer_config(quick)  # bench_convert's model: the quick content encoder gives v1 features
    torch.manual_seed(0)
    rmvpe = RMVPE(E2E(n_blocks=1, en_de_layers=2, inter_layers=1) if quick else E2E()).to(device).eval()
    def build(backend: str, precision: str) -> VoiceConverter:
        # one model each (backend "torch" fp16 halves its model in place), each from a copy of the config:
        # remove_posterior_encoder() flips the config's use_posterior_encoder, which changes how later models draw
        base = unit_gain_synthesizer(copy.deepcopy(config)).to(device)
        base.remove_posterior_encoder()
        return VoiceConverter(base, encoder, f0_method="rmvpe", rmvpe_model=rmvpe, seed=0, backend=backend,
                              precision=precision)

    rows = {}
    for seconds in durations:
        audio = speech_like(seconds)
        names = [f"{backend}_{precision}" for backend, precision in backends]
        runs: dict[str, list[dict]] = {name: [] for name in names}
        outputs = {}
        if seconds <= 15:
            # short inputs: every backend alive at once, runs interleaved (A B C A B C ...)
            converters = {name: build(*pair) for name, pair in zip(names, backends)}
            for converter in converters.values():
                converter.convert(audio[: 16000 * 2])  # warm-up, and the per-voice copy / ONNX export
            for _ in range(repeats):
                for name, converter in converters.items():
                    outputs[name], figures = converted(converter, audio)
                    runs[name].append(figures)
            del converters
        else:
            # long inputs: several GB of decoder activations per segment, which the CPU allocator keeps
            # (retain_freed_memory), so each backend runs once in a fresh process of its own
            with tempfile.TemporaryDirectory() as tmp:
                for name, (backend, precision) in zip(names, backends):
                    out = Path(tmp) / f"{name}.npy"
                    command = [sys.executable, __file__, "--single-conversion", backend, precision, str(seconds),
                               str(out), "--device", device] + (["--quick"] if quick else [])
                    done = subprocess.run(command, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        runs.pop(name)
                        print(f"{name} {seconds:g} s failed: {done.stderr[-2000:]}", file=sys.stderr)
                        continue
                    runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    outputs[name] = np.load(out)
        gc.collect()
        row = {}
        reference = outputs.get("torch_fp32")
        for name, measured in runs.items():
            median = sorted(measured, key=lambda r: r["total_s"])[len(measured) // 2]
            if reference is not None:
                median["log_mel_db_vs_torch_fp32"] = round(log_mel_distance_db(outputs[name], reference,
                                                                                config.sampling_rate), 4)
            row[name] = median
        rows[f"{seconds:g}s"] = row
        print(f"conversion {seconds:g} s: {json.dumps(row)}", file=sys.stderr)
    return rows


def single_conversion(backend: str, precision: str, seconds: float, out: str, device: str, quick: bool) -> None:
    """One conversion in this process (the --single-conversion mode): figures as JSON on stdout, audio to `out`."""
    retain_freed_memory()
    encoder = content_encoder(quick, device)
    config = synthesizer_config(quick)
    torch.manual_seed(0)
    rmvpe = RMVPE(E2E(n_blocks=1, en_de_layers=2, inter_layers=1) if quick else E2E()).to(device).eval()
    base = unit_gain_synthesizer(copy.deepcopy(config)).to(device)
    base.remove_posterior_encoder()
    converter = VoiceConverter(base, encoder, f0_method="rmvpe", rmvpe_model=rmvpe, seed=0, backend=backend,
                               precision=precision)
    audio = speech_like(seconds)
    converter.convert(audio[: 16000 * 2])  # warm-up, and the per-voice copy / ONNX export
    output, figures = converted(converter, audio)
    import resource

    figures["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    np.save(out, output)
    print(json.dumps(figures))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the cuda run needs a GPU)")
    parser.add_argument("--seconds", type=float, default=10.0, help="synthesizer input length (default 10 s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--durations", type=float, nargs="*", default=[10.0, 60.0],
                        help="conversion lengths in seconds (none: skip the conversion part)")
    parser.add_argument("--compile", action="store_true", help="also time the fast path under torch.compile")
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs: check the script runs")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--single-conversion", nargs=4, metavar=("BACKEND", "PRECISION", "SECONDS", "OUT_NPY"),
                        help=argparse.SUPPRESS)  # internal: one long conversion in a fresh process
    args = parser.parse_args(argv)
    if args.single_conversion:
        warnings.filterwarnings("ignore")
        backend, precision, seconds, out = args.single_conversion
        single_conversion(backend, precision, float(seconds), out, args.device, args.quick)
        return {}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and a CUDA build of PyTorch")
    warnings.filterwarnings("ignore")
    allocator = "retain_freed_memory" if args.device == "cpu" and retain_freed_memory() else "default"
    config = small_config("v2", True, 40000) if args.quick else RVCConfig.from_preset("40k", "v2", True)
    frames = 200 if args.quick else round(args.seconds * 100)
    result: dict = {
        "benchmark": "bench_synthesizer",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                    "cpu_bf16": mkldnn_bf16_supported(), "allocator": allocator,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "model": f"RVC {config.version} {config.sample_rate_name} with pitch "
                 f"({'tiny' if args.quick else 'full size'}, random weights, unit-gain decoder)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["synthesizer"] = synthesizer_rows(config, frames, args.repeats, args.device, args.compile, Path(tmp))
    print(f"synthesizer: {json.dumps(result['synthesizer']['rows'])}", file=sys.stderr)
    if args.durations:
        backends = [("torch", "fp32"), ("torch-fast", "fp32"), ("onnx", "fp32")]
        if args.device.startswith("cuda"):
            backends += [("torch", "fp16"), ("torch-fast", "bf16"), ("torch-fast", "fp16"), ("onnx", "fp16")]
        elif mkldnn_bf16_supported():
            backends.append(("torch-fast", "bf16"))
        result["conversion_rtf"] = conversion_rows(config, args.durations, args.repeats, args.device, args.quick,
                                                   backends)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from rvc_peft.utils.files import atomic_write

        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text + "\n"))
    return result


if __name__ == "__main__":
    main()
