"""LoRA voice adapters for RVC, end to end: make, save, load, switch voices, blend two voices, merge and export.

Runs in well under a minute on a CPU with random-weight models saved in RVC's real on-disk format (a stand-in for
`assets/pretrained_v2/f0G40k.pth`); the "training" is a few optimiser steps on a toy target, just to change the
adapter weights. Swap in a real base and real training (see train_accelerate.py) for real voices.

    python examples/adapters.py [--out DIR] [--full-size]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peft import PeftModel, get_peft_model

import rvc_peft
import rvc_peft.tuners
from rvc_peft.checkpoints import save_rvc_checkpoint
from rvc_peft.models import RVCConfig
from rvc_peft.testing import random_inputs, random_synthesizer, small_config
from rvc_peft.tuners import RVCLoraConfig, read_adapter_info, set_training_summary


def pretend_to_train(model: PeftModel, seed: int, steps: int = 5) -> None:
    """A few Adam steps on the decoder towards a random waveform (only the LoRA weights are trainable)."""
    config = model.get_base_model().config
    torch.manual_seed(seed)  # the NSF source adds noise in training mode
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, config.inter_channels, 16, generator=gen)
    f0 = torch.full((2, 16), 150.0)
    target = torch.rand(2, 1, 16 * config.hop_length, generator=gen) * 2 - 1
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(steps):
        speaker = model.get_base_model().emb_g(torch.zeros(2, dtype=torch.long)).unsqueeze(-1)
        audio = model.get_base_model().dec(z, f0, g=speaker)
        loss = (audio - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    set_training_summary(model, {"steps": steps, "optimizer": "Adam", "learning_rate": 5e-3, "loss": round(loss.item(), 4)})


def convert(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(0)  # RVC samples noise at inference; fix it so outputs can be compared
    with torch.no_grad():
        return model.infer(**inputs)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the files (default: a temporary folder)")
    parser.add_argument("--full-size", action="store_true", help="use the real v2 40k size (36 M parameters)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread is fastest
    started = time.perf_counter()
    work = Path(args.out or tempfile.mkdtemp(prefix="rvc-peft-adapters-"))
    config = RVCConfig.from_preset("40k", "v2") if args.full_size else small_config("v2", True, 40000)

    # 0. A base model in RVC's own format (fp16 {"model": state_dict}, like pretrained_v2/f0G40k.pth).
    base_file = save_rvc_checkpoint(random_synthesizer(config, seed=0), work / "f0G40k.pth", kind="base")
    inputs = random_inputs(config, frames=50)  # 0.5 s of content features + pitch

    # 1. Make two voice adapters and save them (adapter_config.json, adapter_model.safetensors, rvc_adapter.json,
    #    README.md model card).
    for name, seed in (("voice_a", 1), ("voice_b", 2)):
        model = get_peft_model(rvc_peft.load_synthesizer(base_file), RVCLoraConfig(r=8, lora_alpha=16))
        if name == "voice_a":
            model.print_trainable_parameters()
        pretend_to_train(model, seed)
        model.save_pretrained(work / name)
        size = (work / name / "adapter_model.safetensors").stat().st_size
        print(f"saved {name}: {size / 1e3:.0f} kB -> {work / name}")

    # 2. Load them onto a fresh base with PEFT (the base's version / sample rate / shapes are checked).
    base = rvc_peft.load_synthesizer(base_file)
    base_audio = convert(base, inputs)
    model = PeftModel.from_pretrained(base, str(work / "voice_a"), adapter_name="a")
    model.load_adapter(str(work / "voice_b"), adapter_name="b")
    print("voice_a was made for:", read_adapter_info(work / "voice_a")["base_model"]["name_or_path"])

    # 3. Switch voices without reloading the base.
    outputs = {}
    for adapter in ("a", "b"):
        model.set_adapter(adapter)
        outputs[adapter] = convert(model, inputs)
    with model.disable_adapter():
        assert torch.equal(convert(model, inputs), base_audio)
    print(f"voice a vs b: max difference {(outputs['a'] - outputs['b']).abs().max():.4f}")

    # 4. Blend two voices: "cat" keeps both adapters exactly (rank 16), "svd" compresses back to rank 8.
    model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "blend", combination_type="cat")
    model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "blend_r8", combination_type="svd", svd_rank=8)
    model.set_adapter("blend")
    blended = convert(model, inputs)
    model.set_adapter("blend_r8")
    print(f"blend (cat) vs blend (svd, rank 8): max difference {(convert(model, inputs) - blended).abs().max():.2e}")

    # 5. Merge the blend into the base and export an RVC voice file that RVC WebUI / Applio load as usual.
    model.set_adapter("blend")
    merged = model.merge_and_unload(adapter_names=["blend"])
    voice_file = rvc_peft.export_rvc(merged, work / "blend.pth", info="50/50 blend of voice_a and voice_b")
    reloaded = rvc_peft.load_synthesizer(voice_file)
    error = (convert(reloaded, inputs) - blended).abs().max()
    print(f"exported {voice_file} ({voice_file.stat().st_size / 1e6:.1f} MB); exported vs adapter: {error:.1e} "
          "(fp16 storage)")
    print(f"one step from the shell: rvc-peft export --base {base_file} --adapter {work / 'voice_a'} "
          f"--out {work / 'voice_a.pth'}")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
