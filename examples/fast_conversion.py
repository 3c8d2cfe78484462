"""Convert one recording with each synthesizer backend and compare speed and output with the reference path.

    python examples/fast_conversion.py                                  # voice-lab base, an espeak-ng sentence
    python examples/fast_conversion.py --input speech.wav --out converted/
    python examples/fast_conversion.py --base f0G40k.pth --adapter voices/alice \\
        --content-encoder lj1995/VoiceConversionWebUI/hubert_base.pt --input speech.wav

Backends: "torch" (reference), "torch-fast" fp32 (same output to 1e-4), "torch-fast" bf16 (CPUs with
avx512_bf16/AMX, GPUs) and "onnx" (with onnxruntime installed). For each one: the conversion time, the time in the
synthesizer, and the log-mel distance (dB) of its output to the reference's, with the same noise seed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from example_audio import base_and_encoder, spoken_or_synthetic, voice_arguments

from rvc_peft.inference import BackendError, VoiceConverter, prepare_audio, write_audio
from rvc_peft.inference.evaluation import log_mel_distance_db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    voice_arguments(parser)
    parser.add_argument("--out", default=None, help="folder for the converted files (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        base, encoder = base_and_encoder(args, parser)
        sentence = "The fast path gives the same voice in less time, on the same weights."
        audio, _ = prepare_audio(Path(args.input) if args.input else spoken_or_synthetic(folder, sentence))
        reference = None
        print(f"{'backend':<18} {'convert s':>9} {'synth s':>8} {'vs torch fp32':>14}")
        for backend, precision in (("torch", "fp32"), ("torch-fast", "fp32"), ("torch-fast", "bf16"),
                                   ("onnx", "fp32")):
            try:
                converter = VoiceConverter.from_pretrained(base, args.adapter, content_encoder=encoder,
                                                           f0_method=args.f0_method, seed=0, backend=backend,
                                                           precision=precision)
            except BackendError as err:  # bf16 without native support, onnxruntime missing
                print(f"{backend + ' ' + precision:<18} skipped: {err}")
                continue
            converter.convert(audio[:16000])  # warm-up: the per-voice copy or ONNX export, allocations
            output, rate = converter.convert(audio)
            timings = converter.last_timings
            if reference is None:
                reference = output
            distance = log_mel_distance_db(output, reference, rate)
            print(f"{backend + ' ' + precision:<18} {timings.total:9.2f} {timings.synthesizer:8.2f} "
                  f"{distance:11.3f} dB")
            write_audio(folder / f"{backend}-{precision}.wav", output, rate)
        print(f"converted files in {folder}" if args.out else "(pass --out DIR to keep the converted files)")


if __name__ == "__main__":
    main()
