"""Turn a folder of recordings into an rvc-peft training dataset, then look at what was written.

Real use (ContentVec/HuBERT weights from RVC, e.g. assets/hubert/hubert_base.pt, or a transformers folder):

    python examples/preprocess_dataset.py --audio-dir my_voice/ --out-dir data/my_voice \
        --content-encoder assets/hubert/hubert_base.pt --f0-method rmvpe --rmvpe assets/rmvpe/rmvpe.pt

which is the same as `rvc-peft preprocess my_voice/ data/my_voice --content-encoder ... --f0-method rmvpe`.

Without arguments the script makes a demo: a few seconds of espeak-ng speech (or synthetic voiced tones when
espeak-ng is missing), a tiny content encoder with random weights (so the numbers are meaningless, the shapes
are real), and pitch by the fast `pm` method.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def _demo_audio(folder: Path) -> None:
    from rvc_peft.features.synthetic import espeak_speech, voiced_signal

    folder.mkdir(parents=True, exist_ok=True)
    texts = ["Retrieval based voice conversion needs about ten minutes of clean speech.",
             "Each recording is cut at its pauses into slices of a few seconds."]
    for k, text in enumerate(texts):
        if espeak_speech(text, folder / f"speech_{k}.wav", pitch=40 + 20 * k) is None:
            audio, _ = voiced_signal(120.0 + 60 * k, 4.0, 22050, seed=k)
            sf.write(folder / f"speech_{k}.wav", audio, 22050)


def _tiny_encoder(folder: Path) -> str:
    from rvc_peft.testing import tiny_content_encoder

    tiny_content_encoder().save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", type=Path)
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--content-encoder", help="hubert_base.pt, a transformers folder or a hub id")
    parser.add_argument("--version", default=None, choices=("v1", "v2"))
    parser.add_argument("--sample-rate", default="40k")
    parser.add_argument("--f0-method", default="pm")
    parser.add_argument("--rmvpe", default=None)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    from rvc_peft.data import build_dataset, load_rvc_dataset

    scratch = Path(tempfile.mkdtemp(prefix="rvc-peft-demo-"))
    audio_dir = args.audio_dir or scratch / "audio"
    if args.audio_dir is None:
        _demo_audio(audio_dir)
    encoder = args.content_encoder or _tiny_encoder(scratch / "tiny_encoder")
    version = args.version or ("v2" if args.content_encoder else "v1")  # the demo encoder is a v1-width one
    out_dir = args.out_dir or scratch / "dataset"

    info = build_dataset(audio_dir, out_dir, sample_rate=args.sample_rate, version=version, f0_method=args.f0_method,
                         content_encoder=encoder, num_workers=args.workers, rmvpe=args.rmvpe)
    dataset, info = load_rvc_dataset(out_dir)
    print(f"\n{info.num_rows} slices, {info.version} {info.sample_rate} Hz, pitch by {info.f0_method}, "
          f"speakers {info.speakers}; written to {out_dir}")
    for row in dataset.with_format("numpy").select(range(min(5, len(dataset)))):
        voiced = row["pitchf"][row["pitchf"] > 0] if info.use_f0 else np.zeros(0)
        print(f"  {row['source_file']} @ {row['offset']:.2f} s: audio {len(row['audio']) / info.sample_rate:.2f} s, "
              f"phone {tuple(row['phone'].shape)} (50 fps)"
              + (f", pitch {len(row['pitchf'])} frames, median F0 {np.median(voiced):.0f} Hz" if len(voiced) else ""))
    for item in info.skipped:
        print(f"  skipped {item['file']}: {item['reason']}")


if __name__ == "__main__":
    main()
