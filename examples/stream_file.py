"""Stream a file block by block through a voice (RVC's realtime algorithm) and compare with the offline conversion.

    python examples/stream_file.py                                  # voice-lab base, an espeak-ng sentence
    python examples/stream_file.py --input speech.wav --block-ms 250 --out streamed.wav
    python examples/stream_file.py --base f0G40k.pth --adapter voices/alice \\
        --content-encoder lj1995/VoiceConversionWebUI/hubert_base.pt --f0-method fcpe --input speech.wav

Prints the algorithmic latency, the per-block processing time and the real-time factor, and how far the streamed
output is from `VoiceConverter.convert` (mean absolute log-mel difference in dB) next to how far two offline
conversions with different noise seeds are from each other.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from example_audio import base_and_encoder, spoken_or_synthetic, voice_arguments

from rvc_peft.inference import StreamingConverter, VoiceConverter, prepare_audio, stream_file
from rvc_peft.inference.evaluation import log_mel_distance_db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    voice_arguments(parser)
    parser.add_argument("--block-ms", type=float, default=500.0)
    parser.add_argument("--extra-ms", type=float, default=1000.0)
    parser.add_argument("--crossfade-ms", type=float, default=50.0)
    parser.add_argument("--out", default=None, help="streamed WAV (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # blocks are small: one thread avoids contention (and matches a live audio thread)
    folder = Path(tempfile.mkdtemp(prefix="rvc_stream_"))
    base, encoder = base_and_encoder(args, parser)
    sentence = "Streaming conversion turns speech into another voice while you talk."
    source = Path(args.input) if args.input else spoken_or_synthetic(folder, sentence)
    converter = VoiceConverter.from_pretrained(base, args.adapter, content_encoder=encoder,
                                               f0_method=args.f0_method, seed=0)
    streamer = StreamingConverter.from_converter(
        converter, block_seconds=args.block_ms / 1000, extra_seconds=args.extra_ms / 1000,
        crossfade_seconds=args.crossfade_ms / 1000)
    result = stream_file(streamer, source, args.out or folder / "streamed.wav")
    print(f"{source} -> {result.path}")
    print(json.dumps(result.report, indent=2))

    audio, _ = prepare_audio(source)
    offline = converter.convert(audio, rms_mix_rate=1.0)[0]
    converter.seed = 1
    other_seed = converter.convert(audio, rms_mix_rate=1.0)[0]
    rate = converter.sample_rate
    print(f"log-mel distance to the offline conversion: streamed {log_mel_distance_db(result.audio, offline, rate):.2f}"
          f" dB, offline with another noise seed {log_mel_distance_db(other_seed, offline, rate):.2f} dB")


if __name__ == "__main__":
    main()
