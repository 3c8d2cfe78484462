"""Convert audio with many LoRA voices on one base: switch by name, blend, mix voices in one batch, evaluate.

    python examples/convert_and_switch_voices.py                       # demo models with random weights
    python examples/convert_and_switch_voices.py --base f0G40k.pth --adapter voices/alice --adapter voices/bob \\
        --content-encoder lj1995/VoiceConversionWebUI/hubert_base.pt --input song.wav --f0-method rmvpe

Without arguments it writes a small random-weight base, two adapters and a content encoder in the real on-disk
formats (nothing can be downloaded here), so the audio is noise-like: the point is the mechanics and the timings.
Outputs (WAV files, a metrics JSON and a comparison PNG) go to --out (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rvc_peft.checkpoints import export_rvc
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.inference import VoiceBank, VoiceConverter, evaluate, write_audio


def demo_models(folder: Path) -> tuple[Path, list[Path], Path]:
    """A tiny v1 40k base (exported .pth), two LoRA voices on it, and a transformers-format content encoder."""
    from rvc_peft.checkpoints import load_synthesizer
    from rvc_peft.testing import random_synthesizer, randomize_lora, small_config, tiny_content_encoder
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    export_rvc(random_synthesizer(small_config("v1", True, 40000), seed=0), folder / "base.pth")
    adapters = []
    for name, seed, preset in (("alice", 1, "generator"), ("bob", 2, "generator+flow")):
        base = load_synthesizer(folder / "base.pth")  # adapters are made (trained) on the base file itself
        model = get_rvc_peft_model(base, RVCLoraConfig(target_modules=preset, r=4, lora_alpha=8))
        randomize_lora(model, seed=seed, scale=0.05, parameters="lora_B")  # stand-in for training
        model.save_pretrained(str(folder / name))
        adapters.append(folder / name)
    tiny_content_encoder().save_pretrained(folder / "hubert")
    return folder / "base.pth", adapters, folder / "hubert"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="base model (RVC .pth, folder or hub id); default: a demo model")
    parser.add_argument("--adapter", action="append", default=[], help="adapter folder or hub id (repeat)")
    parser.add_argument("--content-encoder", help="HuBERT/ContentVec folder, fairseq .pt or hub reference")
    parser.add_argument("--input", help="audio file to convert (default: a synthetic voiced signal)")
    parser.add_argument("--f0-method", default=None, help="pitch method (default: rmvpe with real models, pm for the demo)")
    parser.add_argument("--out", help="output folder (default: a temporary one)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    out = Path(args.out or tempfile.mkdtemp(prefix="rvc-peft-voices-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.base is None:
        base, adapters, encoder = demo_models(out / "models")
        f0_method = args.f0_method or "pm"
    else:
        if len(args.adapter) < 2 or not args.content_encoder:
            parser.error("with --base, pass at least two --adapter and a --content-encoder")
        base, adapters, encoder, f0_method = args.base, args.adapter, args.content_encoder, args.f0_method or "rmvpe"
    source = args.input or (voiced_signal(140.0, 4.0, unvoiced_gaps=[(1.5, 1.8), (3.0, 3.2)])[0], 16000)

    # 1. One base, several voices: the base is loaded once; each voice is a small adapter on top of it.
    started = time.perf_counter()
    converter = VoiceConverter.from_pretrained(base, adapters, content_encoder=encoder, f0_method=f0_method, seed=0)
    print(f"loaded base + {len(adapters)} voices in {time.perf_counter() - started:.2f} s: {converter.voices.names}")
    names = converter.voices.names

    # 2. Switch voices by name: no reload, milliseconds. `convert(voice=...)` switches for you and, used alone, merges
    #    the voice into the base weights (merge_single_voice=True) so it runs at base-model speed.
    for name in [*names, *names]:
        converter.voices.activate(name)
        print(f"switch to {name}: {1000 * converter.voices.last_switch_seconds:.2f} ms")
    for name in names:
        audio, rate = converter.convert(source, voice=name, f0_up_key=0)
        write_audio(out / f"{name}.wav", audio, rate)

    # 3. Blend voices into a new one (exact weighted sum of their LoRA deltas) and use it like any other voice.
    converter.voices.blend("blend", {names[0]: 0.5, names[1]: 0.5})
    audio, rate = converter.convert(source, voice="blend")
    write_audio(out / "blend.wav", audio, rate)

    # 4. One batch, different voices per input: a single synthesizer pass routes each row to its adapter.
    results = converter.convert_batch([source, source, source], [names[0], names[1], VoiceBank.BASE])
    for name, (audio, rate) in zip([names[0], names[1], "base"], results):
        write_audio(out / f"batch_{name}.wav", audio, rate)
    print("timings of the mixed batch:", converter.last_timings.as_dict())

    # 5. Evaluate one conversion against another voice's (or your reference recording) and draw the comparison.
    metrics = evaluate(out / f"{names[0]}.wav", out / f"{names[1]}.wav", figure=out / "compare.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: metrics[k] for k in ("mcd_db", "f0_rmse_cents", "f0_corr", "vuv_error_rate",
                                               "spectral_convergence")}, indent=2))
    print(f"outputs in {out}: {sorted(p.name for p in out.iterdir() if p.is_file())}")
    assert np.isfinite(audio).all()


if __name__ == "__main__":
    main()
