"""RVC-specific parts: target presets, weight-norm folding, provenance facts, fingerprints, the model card."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import LoraLayer
from torch import nn

import rvc_peft.tuners
from rvc_peft.models import fold_weight_norm, has_weight_norm
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora, small_config
from rvc_peft.tuners import (
    RVCLoraConfig,
    base_model_fingerprint,
    get_rvc_peft_model,
    read_adapter_info,
    set_training_summary,
    target_modules_for,
)
from tests.tuners.toy_models import LinearOnly

CONVS = (nn.Conv1d, nn.ConvTranspose1d)


def _expected_targets(model: nn.Module, preset: str) -> set[str]:
    """Independent definition of the presets: every conv of dec / flow; every Linear/Embedding/conv of enc_p."""
    parts = {"generator": ("dec.",), "flow": ("flow.",), "encoder": ("enc_p.",), "all": ("dec.", "flow.", "enc_p.")}
    prefixes = tuple(p for name in preset.split("+") for p in parts[name])
    kinds = {"dec.": CONVS, "flow.": CONVS, "enc_p.": (*CONVS, nn.Linear, nn.Embedding)}
    return {
        name for name, module in model.named_modules()
        if name.startswith(prefixes) and isinstance(module, kinds[next(p for p in prefixes if name.startswith(p))])
    }


def _targeted(peft_model: PeftModel) -> set[str]:
    return {name for name, module in peft_model.base_model.model.named_modules() if isinstance(module, LoraLayer)}


def _run(model: nn.Module, inputs: dict) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return model.infer(**inputs)[0]


@pytest.mark.parametrize(
    ("version", "use_f0", "rate", "preset"),
    [("v2", True, 40000, "generator"), ("v2", True, 48000, "generator+flow"), ("v1", False, 32000, "all"),
     ("v2", True, 40000, "encoder")],
)
def test_presets_target_exactly_the_named_parts(version: str, use_f0: bool, rate: int, preset: str) -> None:
    base = random_synthesizer(small_config(version, use_f0, rate))
    expected = _expected_targets(base, preset)
    model = get_peft_model(base, RVCLoraConfig(target_modules=preset, r=2))
    assert _targeted(model) == expected
    assert not any(name.startswith(("enc_q.", "emb_g")) for name in _targeted(model))
    if "generator" in preset:
        assert any(name.startswith("dec.ups.") for name in expected)
        assert any(name.startswith("dec.noise_convs.") for name in expected) == use_f0


def test_plain_lora_config_defaults_to_generator_and_accepts_preset_names() -> None:
    base = random_synthesizer(small_config())
    default = get_peft_model(base, LoraConfig(r=2))
    assert _targeted(default) == _expected_targets(random_synthesizer(small_config()), "generator")
    assert type(default.peft_config["default"]) is RVCLoraConfig  # upgraded in place: same fields
    named = get_peft_model(random_synthesizer(small_config()), LoraConfig(r=2, target_modules="generator+flow"))
    assert named.peft_config["default"].target_modules == target_modules_for("generator+flow")


def test_rvc_lora_config_is_field_free_with_voice_defaults() -> None:
    config = RVCLoraConfig()
    assert (config.r, config.lora_alpha, config.peft_type.value) == (8, 16, "LORA")
    assert config.target_modules == target_modules_for("generator")
    assert [f.name for f in dataclasses.fields(RVCLoraConfig)] == [f.name for f in dataclasses.fields(LoraConfig)]
    assert sorted(config.to_dict()) == sorted(LoraConfig().to_dict())
    with pytest.raises(ValueError, match=r"unknown RVC target preset 'decoderz'; choose from generator, flow"):
        target_modules_for("decoderz")


def test_rank_pattern_and_dora_refusal_on_rvc() -> None:
    model = get_peft_model(random_synthesizer(small_config()), RVCLoraConfig(r=2, rank_pattern={"dec.ups.0": 4}))
    dec = model.base_model.model.dec
    assert dec.ups[0].r["default"] == 4 and dec.ups[1].r["default"] == 2
    assert next(iter(dec.ups[0].lora_A["default"].weight.shape)) == 4
    with pytest.raises(ValueError, match=r"DoRA \(use_dora=True\) is not supported for the ConvTranspose1d layer"):
        get_peft_model(random_synthesizer(small_config()), RVCLoraConfig(use_dora=True))


def test_get_rvc_peft_model_folds_weight_norm_first() -> None:
    config = small_config()
    inputs = random_inputs(config, frames=16)
    reference = _run(random_synthesizer(config), inputs)
    model = get_rvc_peft_model(random_synthesizer(config), RVCLoraConfig(r=2))
    assert not any(has_weight_norm(m) for m in model.base_model.model.modules())
    torch.testing.assert_close(_run(model, inputs), reference, atol=1e-6, rtol=0)  # folding keeps the function
    randomize_lora(model, scale=0.05)
    adapted = _run(model, inputs)
    assert (adapted - reference).abs().max() > 1e-3
    merged = model.merge_and_unload()
    torch.testing.assert_close(_run(merged, inputs), adapted, atol=1e-5, rtol=0)
    assert type(merged.dec.ups[0]) is nn.ConvTranspose1d


def test_merge_on_unfolded_model_is_not_silently_dropped() -> None:
    config = small_config()
    inputs = random_inputs(config, frames=16)
    base = random_synthesizer(config)
    reference = _run(base, inputs)
    model = get_peft_model(base, LoraConfig(r=2, target_modules="generator+flow"))
    randomize_lora(model, scale=0.05)
    adapted = _run(model, inputs)
    merged = model.merge_and_unload()
    assert has_weight_norm(merged.dec.ups[0]) and has_weight_norm(merged.flow.flows[0].enc.in_layers[0])
    torch.testing.assert_close(_run(merged, inputs), adapted, atol=1e-5, rtol=0)
    assert (adapted - reference).abs().max() > 1e-3


def test_fingerprint_ignores_representation_but_not_weights() -> None:
    fingerprint = base_model_fingerprint(random_synthesizer(small_config()), use_cache=False)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64
    folded = fold_weight_norm(random_synthesizer(small_config()))
    assert base_model_fingerprint(folded, use_cache=False) == fingerprint
    no_enc_q = random_synthesizer(small_config())
    no_enc_q.remove_posterior_encoder()  # (this also edits its config object: never reuse a config after it)
    assert base_model_fingerprint(no_enc_q, use_cache=False) == fingerprint
    wrapped = get_peft_model(random_synthesizer(small_config()), RVCLoraConfig(r=2))
    randomize_lora(wrapped)
    assert base_model_fingerprint(wrapped, use_cache=False) == fingerprint  # LoRA and wrappers are not the base
    assert base_model_fingerprint(random_synthesizer(small_config(), seed=1), use_cache=False) != fingerprint
    changed = random_synthesizer(small_config())
    with torch.no_grad():
        changed.dec.conv_post.weight[0, 0, 0] += 1e-3
    assert base_model_fingerprint(changed, use_cache=False) != fingerprint


def test_merging_forgets_the_cached_fingerprint() -> None:
    base = random_synthesizer(small_config())
    model = get_peft_model(base, RVCLoraConfig(r=2))
    cached = base_model_fingerprint(base)
    randomize_lora(model)
    merged = model.merge_and_unload()
    assert base_model_fingerprint(merged) != cached


def test_facts_model_card_and_training_summary(tmp_path) -> None:
    base = random_synthesizer(small_config())
    base.name_or_path = str(tmp_path / "private" / "f0G40k.pth")  # a local file: only its name may travel
    base.config._name_or_path = base.name_or_path
    model = get_peft_model(base, RVCLoraConfig(r=4, lora_alpha=8))
    set_training_summary(model, {"steps": 800, "dataset": "my voice"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("# My voice\n\nRecorded in my kitchen.\n")
    model.save_pretrained(tmp_path / "out")
    facts = read_adapter_info(tmp_path / "out")
    assert facts["version"] == "v2" and facts["use_f0"] is True and facts["sampling_rate"] == 40000
    assert facts["content_encoder"] == "contentvec" and facts["speaker_id"] == 0
    assert facts["base_model"]["name_or_path"] == "f0G40k.pth"
    assert facts["base_model"]["fingerprint"] == base_model_fingerprint(random_synthesizer(small_config()))
    assert facts["base_model"]["spk_embed_dim"] == 4
    assert facts["training"] == {"steps": 800, "dataset": "my voice"}
    assert facts["adapter"]["num_parameters"] == sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    config_json = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config_json["auto_mapping"]["rvc"] == facts
    assert config_json["auto_mapping"]["base_model_class"] == "RVCSynthesizer"
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "private" not in readme and "private" not in json.dumps(config_json)
    assert "Recorded in my kitchen." in readme  # the user's text is kept
    assert "| RVC version | v2 |" in readme and "| sample rate | 40000 Hz (40k) |" in readme
    assert "| dataset | my voice |" in readme and 'preset "generator"' in readme
    assert "base_model:" not in readme.split("---")[1]  # a local file is no Hub base_model
    set_training_summary(model, {"steps": 900})
    model.save_pretrained(tmp_path / "out")
    again = (tmp_path / "out" / "README.md").read_text()
    assert again.count("rvc-peft:begin") == 1 and "| steps | 900 |" in again and "Recorded in my kitchen." in again


def test_hub_base_becomes_card_base_model(tmp_path) -> None:
    base = random_synthesizer(small_config())
    base.name_or_path = base.config._name_or_path = "someone/rvc-bases/pretrained_v2/f0G40k.pth"
    get_peft_model(base, RVCLoraConfig(r=2)).save_pretrained(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "base_model: someone/rvc-bases\n" in readme
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "someone/rvc-bases/pretrained_v2/f0G40k.pth"
    )


def test_training_summary_and_info_errors(tmp_path) -> None:
    plain = get_peft_model(LinearOnly(), LoraConfig(r=2, target_modules=["a"]))
    with pytest.raises(ValueError, match="adapter 'default' is not on an RVC model"):
        set_training_summary(plain, {"steps": 1})
    model = get_peft_model(random_synthesizer(small_config()), RVCLoraConfig(r=2))
    with pytest.raises(ValueError, match=r"no adapter named 'nope'; the model has \['default'\]"):
        set_training_summary(model, {}, adapter_name="nope")
    plain.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no RVC adapter information \(rvc_adapter.json or auto_mapping.rvc\)"):
        read_adapter_info(tmp_path)


def test_shape_mismatch_without_facts_is_a_clear_error(tmp_path) -> None:
    """An adapter with no RVC facts (e.g. made with stock PEFT on another base) still fails with both names."""
    made = get_peft_model(random_synthesizer(small_config(upsample_initial_channel=48)), RVCLoraConfig(r=2))
    made.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    del config["auto_mapping"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(rvc_peft.tuners.IncompatibleAdapterError, match=r"adapter 'default' .* does not fit this model"):
        PeftModel.from_pretrained(random_synthesizer(small_config()), str(tmp_path))


def test_facts_on_non_rvc_model_are_refused(tmp_path) -> None:
    get_peft_model(random_synthesizer(small_config()), LoraConfig(r=2, target_modules=["dec.conv_post"])).save_pretrained(
        tmp_path
    )
    wrong = nn.Module()
    wrong.dec = nn.Module()
    wrong.dec.conv_post = nn.Conv1d(8, 1, 7)
    with pytest.raises(rvc_peft.tuners.IncompatibleAdapterError, match=r"being loaded onto a Module, which is not an RVC"):
        PeftModel.from_pretrained(wrong, str(tmp_path))


def test_other_content_encoder_warns(tmp_path) -> None:
    """Same architecture and weights, but the base expects another content encoder's features: a warning naming both."""
    import warnings

    get_peft_model(random_synthesizer(small_config()), RVCLoraConfig(r=2)).save_pretrained(tmp_path)

    def load_onto(base: nn.Module) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            PeftModel.from_pretrained(base, str(tmp_path))
        return [str(w.message) for w in caught if "different" in str(w.message)]

    assert load_onto(random_synthesizer(small_config())) == []
    other = random_synthesizer(small_config(content_encoder="chinese-hubert-base"))
    assert base_model_fingerprint(other) == read_adapter_info(tmp_path)["base_model"]["fingerprint"]
    (message,) = load_onto(other)
    assert "has the same architecture but different content encoder ('contentvec' vs 'chinese-hubert-base')" in message
