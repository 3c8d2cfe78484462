"""A merged adapter, exported with `export_merged_voice`, loads through RVC WebUI's own loading steps (RVC's code from
the `rvc` wheel, via `tests.checkpoints.test_rvc_interop.webui_load`) and sounds like our merged model."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from rvc_peft.checkpoints import load_synthesizer, save_rvc_checkpoint
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora, small_config
from rvc_peft.tuners import RVCLoraConfig, export_merged_voice
from tests.checkpoints.test_rvc_interop import no_noise, rvc_infer, webui_load  # skips here too without `rvc`

# Tolerances relative to the audio's peak (small random models are quiet: peaks of 5e-4 to 5e-2)
FP16 = 2e-3  # fp32 merged weights vs their fp16 copy in the voice file (observed: 3e-4)
SAME = 1e-5  # same weights, RVC's code vs ours (observed: <= 1.5e-6)


@pytest.mark.parametrize(("version", "use_f0"), [("v2", True), ("v1", False)])
def test_merged_adapter_export_loads_through_webui(tmp_path, version: str, use_f0: bool) -> None:
    config = small_config(version, use_f0)
    base_file = save_rvc_checkpoint(random_synthesizer(config), tmp_path / "base.pth", kind="base")
    # "all": ConvTranspose1d, dilated and weight-normed Conv1d, the flow and the text encoder's Linear/Embedding
    model = get_peft_model(load_synthesizer(base_file), RVCLoraConfig(target_modules="all", r=4, lora_alpha=8))
    randomize_lora(model, scale=0.05)
    model.save_pretrained(tmp_path / "adapter")
    voice = export_merged_voice(base_file, tmp_path / "adapter", tmp_path / "voice.pth", info="merged adapter")

    merged = model.merge_and_unload()
    x = random_inputs(config, frames=30)
    with torch.no_grad(), no_noise():
        base_audio = load_synthesizer(base_file).infer(**x)[0]
        ours = merged.infer(**x)[0]
        webui = rvc_infer(webui_load(voice), config, x)[0]
        ours_fp16 = merged.half().float().infer(**x)[0]  # the weights exactly as the file stores them
    peak = ours.abs().max()
    assert (ours - base_audio).abs().max() > 20 * FP16 * peak  # the adapter matters (observed: 0.19-0.28 · peak)
    torch.testing.assert_close(webui / peak, ours_fp16 / peak, atol=SAME, rtol=0)  # the file's weights, RVC's code
    torch.testing.assert_close(webui / peak, ours / peak, atol=FP16, rtol=0)  # our fp32 merged model
