"""The main job, end to end: recordings -> dataset -> LoRA training -> conversion -> evaluation -> RVC export.

    python examples/demo.py                                   # offline: the voice-lab base and synthetic voices
    python examples/demo.py --base f0G40k.pth --discriminator f0D40k.pth --sample-rate 40k \\
        --content-encoder hubert_base.pt --f0-method rmvpe --rmvpe rmvpe.pt --recordings my_voice/ --steps 2000 \\
        --loss full --index-rate 0.75

Every step runs the commands a user runs (`rvc-peft preprocess`, `accelerate launch -m rvc_peft.train`,
`rvc-peft convert`, `rvc-peft eval`), in fresh processes, and the demo checks what each wrote.

Without model arguments nothing is downloaded and everything is real but synthetic: the voice-lab base shipped in
`rvc_peft/lab/weights/` (an RVC v2 32k synthesizer trained on twelve offline TTS voices, with the lab's MFCC content
encoder standing in for ContentVec; see its model card), a target voice the base never heard (a festival diphone
voice) reading 20 sentences as "your recordings", and another voice (flite's slt) reading a sentence the target never
read as the source. The converted file should sound like the target speaking the source's words; `rvc-peft eval`
measures that with speaker similarity (SECS) and DNSMOS.
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

TARGET_VOICE = "festival-ked"  # a held-out target speaker of the lab corpus (the base never heard it)
SOURCE_VOICE = "flite-slt"  # another speaker, whose sentence gets converted
SOURCE_SENTENCE = "s035"  # a held-out sentence: the target never read it
RECORDING_SENTENCES = 20  # the target's first 20 training sentences, about a minute of speech


# what the demo writes into --out: a rerun deletes these entries and nothing else
DEMO_ENTRIES = frozenset({"demo.json", "corpus", "recordings", "source.wav", "dataset", "my_voice_lora",
                          "my_voice.pth", "converted", "metrics.json", "compare.png"})


def prepare_out(out: Path) -> str | None:
    """Make `out` ready for a run: create it, or clear an earlier demo's output there. Returns why it refused, or None.

    A folder is only cleared when it holds the demo's marker (demo.json written by this script) and nothing but the
    demo's own entries; then only those entries are deleted. Anything else there (a user's files, another program's
    demo.json next to them) makes it refuse and touch nothing.
    """
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a folder; choose a new --out folder"
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries:
        marker = out / "demo.json"
        try:
            ours = marker.is_file() and "status" in json.loads(marker.read_text())
        except (OSError, ValueError, TypeError):  # unreadable, not JSON, or JSON that is not an object
            ours = False
        foreign = [name for name in entries if name not in DEMO_ENTRIES]
        if not ours or foreign:
            shown = ", ".join(foreign[:5] or entries[:5]) + (" ..." if len(foreign or entries) > 5 else "")
            return (f"{out} holds files that are not an earlier demo's ({shown}); choose a new or empty --out "
                    "folder (nothing was deleted)")
        for name in entries:  # all of them are the demo's own: start over
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps({"status": "running"}))
    return None


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


def lab_material(out: Path) -> tuple[Path, Path]:
    """Speak the target's recordings and the source sentence with the lab corpus builder; returns both paths."""
    from rvc_peft.lab.corpus import TRAIN_SENTENCE_IDS, build_corpus, speaker_files

    corpus = out / "corpus"
    sentences = [*TRAIN_SENTENCE_IDS[:RECORDING_SENTENCES], SOURCE_SENTENCE]
    manifest = build_corpus(corpus, voices=[TARGET_VOICE, SOURCE_VOICE], sentences=sentences, progress=False)
    recordings = out / "recordings"
    recordings.mkdir()
    for path in speaker_files(manifest, TARGET_VOICE, "train"):
        shutil.copy(path, recordings / path.name)
    source = out / "source.wav"
    shutil.copy(next(p for p in speaker_files(manifest, SOURCE_VOICE, "all") if p.stem == SOURCE_SENTENCE), source)
    return recordings, source


def median_f0(files: list[Path]) -> float:
    """Median F0 (Hz) of the voiced frames of some recordings (pm), to pick the conversion's transposition."""
    from rvc_peft.features.audio import load_audio
    from rvc_peft.features.pitch import extract_f0

    f0 = np.concatenate([extract_f0(load_audio(p, 16000), "pm") for p in files])
    return float(np.median(f0[f0 > 0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_output",
                        help="work folder (default demo_output/); must be new, empty or an earlier demo's")
    parser.add_argument("--recordings", type=Path, help="folder of the target voice's recordings (default: spoken)")
    parser.add_argument("--source", type=Path, help="audio file to convert (default: another voice's sentence)")
    parser.add_argument("--base", help="RVC base G file or hub reference (default: the voice-lab base)")
    parser.add_argument("--discriminator", help="matching RVC D file (default: none; the recipe below needs none)")
    parser.add_argument("--content-encoder", help="hubert_base.pt, transformers folder or hub id")
    parser.add_argument("--version", default=None, help="RVC version of --base (default v2)")
    parser.add_argument("--sample-rate", default=None, help="sample rate of --base: 32k, 40k or 48k (default 32k)")
    parser.add_argument("--f0-method", default="harvest", help="pitch method (default harvest; rmvpe with RVC's)")
    parser.add_argument("--rmvpe", default=None, help="rmvpe.pt for --f0-method rmvpe")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--lora-preset", default="all", help="adapter targets (default all, the training default)")
    parser.add_argument("--loss", default="mel_kl", choices=("full", "mel_kl", "mel"),
                        help="training objective (default mel_kl: RVC's mel + KL terms, no discriminator)")
    parser.add_argument("--index-rate", type=float, default=0.0,
                        help="retrieval share at conversion (default 0: with the lab's MFCC features retrieval "
                             "lowered both speaker similarity and DNSMOS; 0.75 is RVC's usual value with ContentVec)")
    parser.add_argument("--pitch", type=float, default=None,
                        help="transposition in semitones (default: from the median F0 of source and recordings)")
    args = parser.parse_args()
    if args.base and not args.content_encoder:
        parser.error("--base needs --content-encoder (the content encoder the base was trained with)")
    started = time.perf_counter()
    out = args.out
    refused = prepare_out(out)
    if refused is not None:
        parser.error(refused)
    rvc_peft = [tool("rvc-peft")]

    t = step("1. recordings, source and models")
    from rvc_peft.lab import lab_base_files

    recordings, source = args.recordings, args.source
    if recordings is None or source is None:
        spoken_recordings, spoken_source = lab_material(out)
        recordings, source = recordings or spoken_recordings, source or spoken_source
    if args.base:
        base, discriminator, encoder = args.base, args.discriminator, args.content_encoder
    else:
        lab = lab_base_files()
        base, discriminator, encoder = str(lab.synthesizer), args.discriminator, str(lab.content_encoder)
    version, sample_rate = args.version or "v2", args.sample_rate or ("40k" if args.base else "32k")
    takes = sorted(p for p in recordings.iterdir() if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
    seconds = sum(sf.info(p).duration for p in takes)
    print(f"{len(takes)} recordings ({seconds:.1f} s) in {recordings}; source {source}; base {base}  "
          f"[{time.perf_counter() - t:.1f} s]")

    t = step("2. preprocess: slices, content features and pitch -> a `datasets` dataset")
    dataset = out / "dataset"
    command = [*rvc_peft, "preprocess", str(recordings), str(dataset), "--sample-rate", sample_rate, "--version",
               version, "--f0-method", args.f0_method, "--content-encoder", str(encoder), "--no-progress"]
    run(command + (["--rmvpe", args.rmvpe] if args.rmvpe else []))
    info = json.loads((dataset / "rvc_dataset.json").read_text())
    print(f"dataset: {info['num_rows']} slices  [{time.perf_counter() - t:.1f} s]")

    t = step(f"3. train a LoRA adapter ({args.steps} steps, accelerate)")
    adapter = out / "my_voice_lora"
    exported = out / "my_voice.pth"
    every = max(args.steps // 2, 1)
    command = [tool("accelerate"), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "rvc_peft.train",
               "--pretrained_model_name_or_path", str(base), "--train_data_dir", str(dataset),
               "--output_dir", str(adapter), "--train_batch_size", "4", "--max_train_steps", str(args.steps),
               "--learning_rate", "5e-4", "--lora_preset", args.lora_preset, "--rank", "8",
               "--train_speaker_embedding", "--loss", args.loss, "--lr_scheduler", "constant",
               "--checkpointing_steps", str(every), "--checkpoints_total_limit", "1", "--validation_steps",
               str(every), "--num_validation_clips", "1", "--logging_steps", "25", "--report_to", "none",
               "--build_index", "--export_rvc", str(exported)]
    if discriminator:
        command += ["--pretrained_discriminator", str(discriminator)]
    run(command, ACCELERATE_USE_CPU=os.environ.get("ACCELERATE_USE_CPU", "1" if args.base is None else "0"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
    files = sorted(p.name for p in adapter.iterdir())
    size = (adapter / "adapter_model.safetensors").stat().st_size
    print(f"adapter folder: {files}\nadapter_model.safetensors {size / 1e6:.2f} MB, exported {exported.name} "
          f"{exported.stat().st_size / 1e6:.2f} MB  [{time.perf_counter() - t:.1f} s]")

    t = step("4. convert the source with the adapter (RVC pipeline: pitch, retrieval, protect, RMS mix)")
    shift = args.pitch
    if shift is None:
        shift = round(12 * np.log2(median_f0(takes) / median_f0([source])))
        print(f"transposing by {shift:+d} semitones (median F0 of the recordings vs the source)")
    converted = out / "converted"
    command = [*rvc_peft, "convert", str(source), "--base", str(base), "--adapter", str(adapter),
               "--content-encoder", str(encoder), "--f0-method", args.f0_method, "--pitch", str(shift),
               "--index-rate", str(args.index_rate), "-o", str(converted), "--seed", "0", "--no-progress"]
    run(command + (["--rmvpe", args.rmvpe] if args.rmvpe else []))
    result = converted / (source.stem + ".wav")
    audio, rate = sf.read(result)
    print(f"{result}: {len(audio) / rate:.2f} s at {rate} Hz, peak {np.abs(audio).max():.3f}  "
          f"[{time.perf_counter() - t:.1f} s]")

    t = step("5. evaluate: whose voice is it (SECS to the recordings and to the source), is it speech (DNSMOS)")
    run([*rvc_peft, "eval", str(result), str(source), "--reference", str(recordings), "--json",
         str(out / "metrics.json"), "--figure", str(out / "compare.png"), "--f0-method", "harvest"])
    metrics = json.loads((out / "metrics.json").read_text())
    if metrics.get("secs") is not None:
        print(f"speaker similarity to the recordings {metrics['secs']:.3f}, to the source {metrics['secs_source']:.3f}"
              f" (same voice ~0.85, different voices ~0.55); DNSMOS OVRL {metrics['dnsmos_ovrl']:.2f} "
              f"(noise ~1.1, clean synthetic speech 2.6-3.5)  [{time.perf_counter() - t:.1f} s]")

    t = step("6. the exported .pth is an ordinary RVC voice")
    from rvc_peft.checkpoints import load_synthesizer, read_pth

    raw = read_pth(exported)  # torch.load(weights_only=True): plain RVC contents
    voice = load_synthesizer(exported)
    print(f"{exported.name}: keys {sorted(raw)}, version {raw['version']}, sr {raw['sr']}, f0 {raw['f0']}; "
          f"loads as {type(voice).__name__} ({voice.config.sample_rate_name})  [{time.perf_counter() - t:.1f} s]")
    elapsed = time.perf_counter() - started
    summary = {"status": "finished", "seconds": round(elapsed, 1), "transposition": shift, "steps": args.steps,
               **{k: metrics.get(k) for k in ("secs", "secs_source", "dnsmos_ovrl", "source_dnsmos_ovrl")}}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    print(f"\ndemo finished in {elapsed:.0f} s; listen to {result} (everything is in {out})")


if __name__ == "__main__":
    main()
