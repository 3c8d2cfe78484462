"""Train a voice adapter from Python: a `TrainingConfig` instead of command-line flags.

    python examples/train_from_python.py                    # a quick run on the voice-lab base, about a minute
    python examples/train_from_python.py --audio-dir my_voice/ --steps 300

Every field of `TrainingConfig` is the command-line option of the same name (`rvc-peft train --help` lists them);
the config is checked when it is made and never changed by the run. Without `--audio-dir` the recordings are a few
espeak-ng sentences (synthetic tones where espeak-ng is missing) and the base is the voice-lab base shipped in the
package, with its content encoder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import soundfile as sf


def demo_recordings(folder: Path) -> Path:
    from rvc_peft.features.synthetic import espeak_speech, voiced_signal

    folder.mkdir(parents=True, exist_ok=True)
    texts = ["A small adapter learns a new voice on top of a shared base.",
             "The base model stays frozen while the adapter trains.",
             "Each recording is cut at its pauses into slices of a few seconds.",
             "Training from Python takes one configuration object."]
    for k, text in enumerate(texts):
        if espeak_speech(text, folder / f"take_{k}.wav", pitch=35) is None:
            audio, _ = voiced_signal(140.0, 3.5, 22050, seed=k)
            sf.write(folder / f"take_{k}.wav", audio, 22050)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", type=Path, help="your recordings (default: a few synthetic sentences)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    from rvc_peft.data import build_dataset
    from rvc_peft.lab import lab_base_files
    from rvc_peft.training import TrainingConfig
    from rvc_peft.training import main as train

    out = args.out or Path(tempfile.mkdtemp(prefix="rvc-peft-train-"))
    lab = lab_base_files()
    recordings = args.audio_dir or demo_recordings(out / "recordings")
    build_dataset(recordings, out / "dataset", sample_rate="32k", version="v2", f0_method="pm",
                  content_encoder=str(lab.content_encoder))

    config = TrainingConfig(
        pretrained_model_name_or_path=str(lab.synthesizer),
        train_data_dir=str(out / "dataset"),
        output_dir=str(out / "my_voice_lora"),
        loss="mel_kl",  # mel + KL, no discriminator: fast on a CPU
        lora_preset="all",
        rank=8,
        train_speaker_embedding=True,
        learning_rate=5e-4,
        lr_scheduler="constant",
        max_train_steps=args.steps,
        train_batch_size=4,
        checkpointing_steps=args.steps,
        validation_steps=args.steps,
        num_validation_clips=1,
        report_to="none",
    )
    result = train(config)
    print(f"\n{result.global_step} steps; adapter in {result.adapter_dir}")
    print("last losses:", {k: round(v, 3) for k, v in result.losses.items() if k.startswith("loss/g/")})
    print("validation:", result.validation)


if __name__ == "__main__":
    main()
