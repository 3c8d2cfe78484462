"""Input audio for the examples: a sentence spoken by espeak-ng, or a synthetic voiced signal without it."""

from __future__ import annotations

import argparse
from pathlib import Path


def spoken_or_synthetic(folder: Path, text: str) -> Path:
    """Write `text` spoken by espeak-ng (voice-lab voice espeak-en-us-m1) to folder/input.wav, or 3 s of a synthetic
    voiced signal when espeak-ng is not installed; returns the file's path."""
    import soundfile as sf

    from rvc_peft.lab.corpus import VOICES

    voice = VOICES["espeak-en-us-m1"]
    if voice.unavailable_reason() is None:
        audio, rate = voice.synthesize(text)
    else:
        from rvc_peft.features.synthetic import voiced_signal

        audio, rate = voiced_signal(140.0, 3.0, sample_rate=16000, seed=0)[0], 16000
    sf.write(str(folder / "input.wav"), audio, rate)
    return folder / "input.wav"


def voice_arguments(parser: argparse.ArgumentParser) -> None:
    """--base, --adapter, --content-encoder, --f0-method and --input, as the conversion examples take them."""
    parser.add_argument("--base", default=None, help="base .pth (default: the voice-lab base)")
    parser.add_argument("--adapter", default=None, help="LoRA voice folder or Hub id")
    parser.add_argument("--content-encoder", default=None, help="content encoder (default: the lab's)")
    parser.add_argument("--f0-method", default="pm", help="pitch method (default pm: cheap on a CPU)")
    parser.add_argument("--input", default=None, help="audio file (default: a spoken sentence)")


def base_and_encoder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """(base, content encoder) from --base/--content-encoder, defaulting to the voice-lab base shipped with rvc-peft."""
    base, encoder = args.base, args.content_encoder
    if base is None:
        from rvc_peft.lab import lab_base_files

        lab = lab_base_files()
        base, encoder = lab.synthesizer, encoder or str(lab.content_encoder)
    if encoder is None:
        parser.error("--base needs --content-encoder")
    return base, encoder
