"""Export an RVC synthesizer to ONNX for realtime clients, run it with onnxruntime, and time it against PyTorch.

    python examples/export_onnx.py                                  # the voice-lab base, into onnx_export/
    python examples/export_onnx.py --base f0G40k.pth --adapter my_voice_lora --content-encoder hubert_base.pt

Writes `model.webui.onnx` (RVC WebUI's layout: phone, phone_lengths, pitch, pitchf, ds, rnd -> audio) and
`model.vcclient.onnx` (VCClient's: feats, p_len, pitch, pitchf, sid -> audio, with its metadata), then synthesizes
a few seconds of a synthetic voiced signal through each graph and through `RVCSynthesizer.infer`, writing the WAVs
and printing the timings. Needs `onnx` and `onnxruntime` (pip install onnx onnxruntime).

Same as the command line: `rvc-peft export-onnx --base B [--adapter A] --out model.onnx [--layout vcclient]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def features(content_encoder: str, version: str, seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phone [T, E] at 100 fps, coarse pitch [T], F0 [T] Hz) of a synthetic voiced signal, as RVC's pipeline
    builds them: content features at 50 fps repeated twice, F0 at 100 fps."""
    from rvc_peft.features.content_encoder import load_content_encoder
    from rvc_peft.features.pitch import f0_to_coarse
    from rvc_peft.features.synthetic import voiced_signal

    audio, f0 = voiced_signal(np.linspace(110.0, 180.0, int(seconds * 100)), seconds, unvoiced_gaps=[(1.0, 1.2)])
    encoder = load_content_encoder(content_encoder, version)
    phone = np.repeat(encoder.extract(audio), 2, axis=0)
    frames = min(len(phone), len(f0))
    return phone[:frames], f0_to_coarse(f0[:frames]), f0[:frames].astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="RVC base / voice (default: the voice-lab base)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder to merge before export")
    parser.add_argument("--content-encoder", default=None, help="content encoder matching the base "
                        "(default: the lab base's MFCC encoder)")
    parser.add_argument("--out", default="onnx_export", help="output folder (default onnx_export/)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the test signal")
    args = parser.parse_args()

    import onnxruntime as ort

    import rvc_peft
    from rvc_peft.inference import write_audio
    from rvc_peft.inference.onnx_export import export_onnx, read_onnx_metadata
    from rvc_peft.lab.assets import lab_base_files

    if args.base is None:
        lab = lab_base_files()
        args.base, args.content_encoder = str(lab.synthesizer), args.content_encoder or str(lab.content_encoder)
    if args.content_encoder is None:
        parser.error("--content-encoder is needed with --base (the features must match the base)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    paths = {}
    for layout in ("webui", "vcclient"):
        started = time.perf_counter()
        paths[layout] = export_onnx(args.base, out / f"model.{layout}.onnx", layout=layout, adapter=args.adapter)
        print(f"{layout}: {paths[layout]} ({paths[layout].stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - started:.1f} s")
    print("VCClient metadata:", read_onnx_metadata(paths["vcclient"])["metadata"])

    model = rvc_peft.load_synthesizer(args.base, keep_posterior_encoder=False)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    config = model.config
    phone, pitch, f0 = features(args.content_encoder, config.version, args.seconds)
    frames = len(phone)
    rnd = np.random.default_rng(0).standard_normal((1, config.inter_channels, frames)).astype(np.float32)
    common = {"pitch": pitch[None], "pitchf": f0[None]} if config.use_f0 else {}
    feeds = {
        "webui": {"phone": phone[None], "phone_lengths": np.array([frames]), "ds": np.array([0]), "rnd": rnd,
                  **common},
        "vcclient": {"feats": phone[None], "p_len": np.array([frames]), "sid": np.array([0]), **common},
    }
    for layout, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        started = time.perf_counter()
        audio = session.run(["audio"], feeds[layout])[0]
        elapsed = time.perf_counter() - started
        wav = write_audio(out / f"{layout}.wav", np.clip(audio[0, 0], -1, 1), config.sampling_rate)
        print(f"onnxruntime {layout}: {frames / 100:.2f} s of audio in {elapsed:.2f} s -> {wav}")

    inputs = {"pitch": torch.from_numpy(pitch[None]), "nsff0": torch.from_numpy(f0[None])} if config.use_f0 else {}
    started = time.perf_counter()
    audio = model.infer(torch.from_numpy(phone[None]), torch.tensor([frames]), **inputs,
                        sid=torch.tensor([0]))[0].numpy()
    elapsed = time.perf_counter() - started
    wav = write_audio(out / "torch.wav", audio[0, 0], config.sampling_rate)
    print(f"pytorch infer: {frames / 100:.2f} s of audio in {elapsed:.2f} s -> {wav}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
