"""examples/adapters.py runs end to end and writes what it says: two adapters, the base, and a blended voice file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from rvc_peft.checkpoints import load_synthesizer
from rvc_peft.models import fold_weight_norm
from rvc_peft.testing import random_inputs
from rvc_peft.tuners import read_adapter_info

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "adapters.py"
FP16 = 2e-3  # fp32 weights vs their fp16 copy in a voice file, relative to the audio's peak (observed: 4e-4)


def _audio(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return model.infer(**inputs)[0]


@pytest.mark.slow  # ~20 s: a fresh interpreter running the whole example
def test_adapters_example_runs_and_writes_its_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert re.search(r"^done in [\d.]+ s$", result.stdout, re.MULTILINE), result.stdout

    for name in ("voice_a", "voice_b"):
        folder = tmp_path / name
        assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                      "rvc_adapter.json", "README.md"}, name
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
        info = read_adapter_info(folder)
        assert info["base_model"]["name_or_path"] == "f0G40k.pth"
        assert info["training"]["steps"] == 5 and info["training"]["optimizer"] == "Adam"

    raw = torch.load(tmp_path / "blend.pth", map_location="cpu", weights_only=True)
    assert raw["info"] == "50/50 blend of voice_a and voice_b" and (raw["sr"], raw["f0"], raw["version"]) == ("40k", 1, "v2")
    assert {t.dtype for t in raw["weight"].values()} == {torch.float16}
    assert not any(key.startswith("enc_q.") for key in raw["weight"])

    # Independently of the example's add_weighted_adapter("cat") + merge: a 50/50 blend of two adapters is the mean of
    # the two merged voices' (weight-norm-free) weights, since base + (ΔA + ΔB)/2 = ((base + ΔA) + (base + ΔB))/2.
    base_file = tmp_path / "f0G40k.pth"
    voices = [fold_weight_norm(PeftModel.from_pretrained(load_synthesizer(base_file), str(tmp_path / name))
                               .merge_and_unload()) for name in ("voice_a", "voice_b")]
    blend = load_synthesizer(tmp_path / "blend.pth")
    mean = fold_weight_norm(load_synthesizer(tmp_path / "blend.pth"))  # the architecture without enc_q
    states = [voice.state_dict() for voice in voices]
    mean.load_state_dict({key: (states[0][key] + states[1][key]) / 2 for key in mean.state_dict()})
    inputs = random_inputs(blend.config, frames=50)
    blended = _audio(blend, inputs)
    peak = blended.abs().max()
    torch.testing.assert_close(blended / peak, _audio(mean, inputs) / peak, atol=FP16, rtol=0)
    for voice in voices:  # the blend is neither voice alone (observed: 0.22 · peak)
        assert (blended - _audio(voice, inputs)).abs().max() > 10 * FP16 * peak
    # the example's own check, on the same inputs (random_inputs(frames=50), noise seed 0)
    reported = float(re.search(r"exported vs adapter: (\S+) \(fp16 storage\)", result.stdout).group(1))
    assert reported <= FP16 * peak
