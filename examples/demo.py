"""The main job, end to end: recordings -> dataset -> LoRA training -> conversion -> evaluation -> RVC export.

    python examples/demo.py                                   # offline: random-weight models, synthetic speech
    python examples/demo.py --base f0G40k.pth --discriminator f0D40k.pth \\
        --content-encoder hubert_base.pt --f0-method rmvpe --rmvpe rmvpe.pt --recordings my_voice/ --steps 2000

Every step runs the commands a user runs (`rvc-peft preprocess`, `accelerate launch train_accelerate.py`,
`rvc-peft convert`, `rvc-peft eval`), in fresh processes, and the demo checks what each one wrote.

Without model arguments nothing is downloaded: the demo writes a small RVC v1 40k base (the real architecture at toy
width) as an RVC pretrained-base file, a full-size RVC v1 discriminator file and a ContentVec-shaped content encoder,
all with random weights, and speaks its "recordings" with espeak-ng (synthetic voiced signals where espeak-ng is
missing). The voice it learns is therefore noise-like; the point is that every stage runs and hands real files to
the next. With real weights and ten minutes of recordings the same commands give a usable voice.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rvc_peft.features.synthetic import espeak_speech, voiced_signal

SENTENCES = [
    "Retrieval based voice conversion learns a voice from a few minutes of speech.",
    "A low rank adapter stores the new voice in about one megabyte.",
    "The base model stays the same for every voice that is trained on it.",
    "Pitch, content and loudness are taken from the source recording.",
    "Training uses the same losses as the original project, with a discriminator.",
    "After training the adapter can be merged and exported as a normal model file.",
]
SOURCE_SENTENCE = "This sentence was never part of the training data, and now it is converted."


def step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def tool(name: str) -> str:
    """A console script of this environment (`rvc-peft`, `accelerate`), as a user would call it."""
    script = Path(sys.executable).with_name(name)
    return str(script) if script.exists() else name


def run(command: list[str], **env: str) -> None:
    """Run one user-facing command in a fresh process, echoing it; stop the demo if it fails."""
    print("$", " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command)), flush=True)
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **env}, check=False)
    if done.returncode != 0:
        sys.exit(f"demo stopped: the command above exited with {done.returncode}")


def speak(text: str, path: Path, pitch: int, seed: int) -> None:
    """espeak-ng speech, or a synthetic voiced signal with pauses when espeak-ng is not installed."""
    if espeak_speech(text, path, pitch=pitch) is None:
        gaps = [(t + 0.6, t + 0.8) for t in np.arange(0.0, 3.0, 1.0)]
        audio, _ = voiced_signal(110.0 + 2 * pitch, 3.0, 22050, seed=seed, unvoiced_gaps=gaps)
        sf.write(path, audio, 22050)


def make_recordings(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, text in enumerate(SENTENCES):
        speak(text, folder / f"take_{k:02d}.wav", pitch=35, seed=k)


def make_demo_models(folder: Path, sample_rate: str) -> tuple[Path, Path, Path]:
    """Random-weight stand-ins for f0G40k.pth, f0D40k.pth and hubert_base.pt, in the formats RVC ships them in."""
    import torch

    from rvc_peft.checkpoints import save_rvc_checkpoint
    from rvc_peft.models import MultiPeriodDiscriminator
    from rvc_peft.testing import random_synthesizer, small_config, tiny_content_encoder

    folder.mkdir(parents=True, exist_ok=True)
    base = save_rvc_checkpoint(random_synthesizer(small_config("v1", True, sample_rate), seed=0),
                               folder / f"f0G{sample_rate}.pth", kind="base")
    torch.manual_seed(0)
    discriminator = save_rvc_checkpoint(MultiPeriodDiscriminator("v1"), folder / f"f0D{sample_rate}.pth", kind="base")
    tiny_content_encoder().save_pretrained(folder / "contentvec")
    return base, discriminator, folder / "contentvec"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_output", help="work folder (default demo_output/)")
    parser.add_argument("--recordings", type=Path, help="folder of the target voice's recordings (default: spoken)")
    parser.add_argument("--source", type=Path, help="audio file to convert (default: a new spoken sentence)")
    parser.add_argument("--base", help="RVC base G file or hub reference (default: a random-weight demo model)")
    parser.add_argument("--discriminator", help="matching RVC D file (default: random-weight demo model)")
    parser.add_argument("--content-encoder", help="hubert_base.pt, transformers folder or hub id")
    parser.add_argument("--version", default=None, help="RVC version of --base (default v2 with --base, else v1)")
    parser.add_argument("--sample-rate", default="40k", help="sample rate of --base: 32k, 40k or 48k (default 40k)")
    parser.add_argument("--f0-method", default="harvest", help="pitch method (default harvest; rmvpe with RVC's)")
    parser.add_argument("--rmvpe", default=None, help="rmvpe.pt for --f0-method rmvpe")
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40: a demo, not a voice)")
    args = parser.parse_args()
    if args.base and not args.content_encoder:
        parser.error("--base needs --content-encoder (the content encoder the base was trained with)")
    started = time.perf_counter()
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rvc_peft = [tool("rvc-peft")]

    t = step("1. recordings and models")
    recordings = args.recordings or out / "recordings"
    if args.recordings is None:
        make_recordings(recordings)
    source = args.source or out / "source.wav"
    if args.source is None:
        speak(SOURCE_SENTENCE, source, pitch=70, seed=99)  # another speaker: higher pitch
    if args.base:
        base, discriminator, encoder = args.base, args.discriminator, args.content_encoder
        version = args.version or "v2"
    else:
        base, discriminator, encoder = make_demo_models(out / "models", args.sample_rate)
        version = args.version or "v1"
    seconds = sum(sf.info(p).duration for p in sorted(recordings.iterdir()) if p.suffix == ".wav")
    print(f"{len(list(recordings.iterdir()))} recordings ({seconds:.1f} s) in {recordings}; base {base}  "
          f"[{time.perf_counter() - t:.1f} s]")

    t = step("2. preprocess: slices, content features and pitch -> a `datasets` dataset")
    dataset = out / "dataset"
    command = [*rvc_peft, "preprocess", str(recordings), str(dataset), "--sample-rate", args.sample_rate, "--version", version,
               "--f0-method", args.f0_method, "--content-encoder", str(encoder), "--no-progress"]
    run(command + (["--rmvpe", args.rmvpe] if args.rmvpe else []))
    info = json.loads((dataset / "rvc_dataset.json").read_text())
    print(f"dataset: {info['num_rows']} slices  [{time.perf_counter() - t:.1f} s]")

    t = step(f"3. train a LoRA adapter with RVC's GAN objective ({args.steps} steps, accelerate)")
    adapter = out / "my_voice_lora"
    exported = out / "my_voice.pth"
    command = [tool("accelerate"), "launch", "--num_processes", "1", "train_accelerate.py",
               "--pretrained_model_name_or_path", str(base), "--train_data_dir", str(dataset),
               "--output_dir", str(adapter), "--train_batch_size", "2", "--max_train_steps", str(args.steps),
               "--learning_rate", "2e-4", "--segment_frames", "12", "--checkpointing_steps", str(max(args.steps // 2, 1)),
               "--checkpoints_total_limit", "1", "--validation_steps", str(max(args.steps // 2, 1)),
               "--num_validation_clips", "1", "--logging_steps", "10", "--build_index", "--export_rvc", str(exported)]
    if discriminator:
        command += ["--pretrained_discriminator", str(discriminator)]
    run(command, ACCELERATE_USE_CPU=os.environ.get("ACCELERATE_USE_CPU", "1" if args.base is None else "0"))
    files = sorted(p.name for p in adapter.iterdir())
    size = (adapter / "adapter_model.safetensors").stat().st_size
    print(f"adapter folder: {files}\nadapter_model.safetensors {size / 1e6:.2f} MB, exported {exported.name} "
          f"{exported.stat().st_size / 1e6:.2f} MB  [{time.perf_counter() - t:.1f} s]")

    t = step("4. convert new audio with the adapter (RVC pipeline: pitch, retrieval, protect, RMS mix)")
    converted = out / "converted"
    command = [*rvc_peft, "convert", str(source), "--base", str(base), "--adapter", str(adapter),
               "--content-encoder", str(encoder), "--f0-method", args.f0_method, "--pitch", "-4",
               "--index-rate", "0.5", "-o", str(converted), "--seed", "0", "--no-progress"]
    run(command + (["--rmvpe", args.rmvpe] if args.rmvpe else []))
    result = converted / (source.stem + ".wav")
    audio, rate = sf.read(result)
    print(f"{result}: {len(audio) / rate:.2f} s at {rate} Hz, peak {np.abs(audio).max():.3f}  "
          f"[{time.perf_counter() - t:.1f} s]")

    t = step("5. evaluate: converted vs source (F0 moved by the -4 semitone shift, MCD, V/UV)")
    run([*rvc_peft, "eval", str(result), str(source), "--json", str(out / "metrics.json"),
         "--figure", str(out / "compare.png"), "--f0-method", "harvest"])
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"F0 RMSE {metrics['f0_rmse_cents']:.0f} cents (the shift is 400), figure {out / 'compare.png'}  "
          f"[{time.perf_counter() - t:.1f} s]")

    t = step("6. the exported .pth is an ordinary RVC voice")
    from rvc_peft.checkpoints import load_synthesizer, read_pth

    raw = read_pth(exported)  # torch.load(weights_only=True): plain RVC contents
    voice = load_synthesizer(exported)
    print(f"{exported.name}: keys {sorted(raw)}, version {raw['version']}, sr {raw['sr']}, f0 {raw['f0']}; "
          f"loads as {type(voice).__name__} ({voice.config.sample_rate_name})  [{time.perf_counter() - t:.1f} s]")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; everything is in {out}")


if __name__ == "__main__":
    main()
