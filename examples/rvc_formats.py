"""Every RVC synthesizer variant, written in every RVC file format, loaded back and run.

    python examples/rvc_formats.py [--out DIR] [--full-size]

Builds v1/v2 × pitch/no-pitch × 32k/40k/48k synthesizers with random weights (real weights cannot be
downloaded here; with real files, just call `rvc_peft.load_synthesizer("f0G40k.pth")`), saves each as a
pretrained base, a training checkpoint, an RVC WebUI export, an Applio export and our Hugging Face folder,
loads every file back and checks the audio is the same.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import rvc_peft
from rvc_peft.models import RVCConfig
from rvc_peft.testing import random_inputs, random_synthesizer, small_config

VARIANTS = [(v, sr, f0) for v in ("v1", "v2") for sr in (32000, 40000, 48000) for f0 in (True, False)]


def convert(model: rvc_peft.RVCSynthesizer, inputs: dict) -> torch.Tensor:
    torch.manual_seed(0)  # the prior sample and the NSF noise are random; fix them to compare
    return model.infer(**inputs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temp folder)")
    parser.add_argument("--full-size", action="store_true", help="official channel counts (slower, 55 MB files)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rvc_formats_"))
    print(f"writing to {out}")
    for version, sr, f0 in VARIANTS:
        config = RVCConfig.from_preset(sr, version, f0) if args.full_size else small_config(version, f0, sr)
        model = random_synthesizer(config)
        x = random_inputs(config, frames=50)
        reference = convert(model, x)
        folder = out / f"{version}_{config.sample_rate_name}_{'f0' if f0 else 'nof0'}"
        files = {
            "pretrained base": rvc_peft.save_rvc_checkpoint(model, folder / f"{'f0' if f0 else ''}G.pth"),
            "training checkpoint": rvc_peft.save_rvc_checkpoint(model, folder / "G_2333333.pth", kind="training"),
            "RVC WebUI export": rvc_peft.export_rvc(model, folder / "voice.pth", info="demo"),
            "Applio export": rvc_peft.export_rvc(model, folder / "voice_applio.pth", flavor="applio"),
        }
        model.save_pretrained(folder / "hf")
        files["Hugging Face folder"] = folder / "hf"
        start = time.perf_counter()
        worst = 0.0
        for path in files.values():
            loaded = rvc_peft.load_synthesizer(path)
            worst = max(worst, (convert(loaded, x) - reference).abs().max().item())
        seconds = reference.shape[-1] / sr
        print(
            f"{config.rvc_class_name:32s} {config.sample_rate_name}: {len(files)} formats loaded in "
            f"{time.perf_counter() - start:.2f}s, {seconds:.2f}s of audio each, max difference {worst:.1e} (fp16 files)"
        )
        if worst > 5e-3:
            raise SystemExit(f"{folder}: reloaded audio differs by {worst}")
    print("all variants round-trip")


if __name__ == "__main__":
    main()
