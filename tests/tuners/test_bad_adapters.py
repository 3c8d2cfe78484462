"""Adapters that would silently make a wrong voice are refused, naming the adapter file and what is wrong.

Covers: an adapter saved without RVC facts for another RVC version (only its LoRA shapes tell), LoRA tensors missing
from or added to adapter_model.safetensors (PEFT only warns and the layers stay the plain base), NaN weights, and
`rvc-peft export` on damaged adapter folders (one line naming the file, never a traceback or torch's advice to
unpickle with weights_only=False). The table in tests/checkpoints/test_hostile_files.py covers the file-level kinds.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

import rvc_peft.tuners  # noqa: F401
from rvc_peft.checkpoints import export_rvc
from rvc_peft.cli import main
from rvc_peft.inference import VoiceBank
from rvc_peft.inference.voices import VoiceError
from rvc_peft.testing import random_synthesizer, randomize_lora, small_config
from rvc_peft.tuners import IncompatibleAdapterError, RVCLoraConfig, export_merged_voice, get_rvc_peft_model


def _adapter(folder, version: str, seed: int = 1):
    model = get_rvc_peft_model(random_synthesizer(small_config(version)), RVCLoraConfig(target_modules="all", r=2,
                                                                                       lora_alpha=4))
    randomize_lora(model, seed=seed, scale=0.05)
    model.save_pretrained(folder)
    return folder


def _strip_facts(folder) -> None:
    """What a stock-PEFT save (or a hand-edited config) looks like: no auto_mapping.rvc, no rvc_adapter.json."""
    config = json.loads((folder / "adapter_config.json").read_text())
    config["auto_mapping"] = None
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "rvc_adapter.json").unlink()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_adapters")
    base = export_rvc(random_synthesizer(small_config("v2")), root / "base_v2.pth")
    good = _adapter(root / "good", "v2")
    v1 = _adapter(root / "v1_no_facts", "v1")
    _strip_facts(v1)
    v1_facts = _adapter(root / "v1_with_facts", "v1")
    return {"root": root, "base": base, "good": good, "v1": v1, "v1_facts": v1_facts}


def _variant(files, tmp_path, name, change):
    folder = tmp_path / name
    shutil.copytree(files["good"], folder)
    tensors = load_file(folder / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def test_v1_adapter_without_facts_on_a_v2_base(files, tmp_path) -> None:
    out = tmp_path / "voice.pth"
    weights = files["v1"] / "adapter_model.safetensors"
    with pytest.raises(IncompatibleAdapterError) as caught:
        export_merged_voice(files["base"], files["v1"], out)
    message = str(caught.value)
    assert message.startswith(f"{weights}: adapter 'default' (saved without RVC facts, so its base is unknown) does "
                              "not fit this model 'base_v2.pth' (the adapter is for RVC v1, 256-wide content "
                              "features; the model is RVC v2, 768-wide): "
                              "base_model.model.enc_p.emb_phone.lora_A.weight: adapter [2, 256] vs model [2, 768]")
    assert not out.exists()


def test_v1_adapter_with_facts_names_the_folder_and_both_versions(files, tmp_path) -> None:
    with pytest.raises(IncompatibleAdapterError) as caught:
        export_merged_voice(files["base"], files["v1_facts"], tmp_path / "voice.pth")
    message = str(caught.value)
    assert message.startswith(f"{files['v1_facts']}: adapter 'default' was made for an RVC v1 40k with pitch")
    assert "version 'v1' vs 'v2'" in message


def test_missing_lora_tensors_are_refused(files, tmp_path) -> None:
    dropped = []

    def drop(tensors):
        for key in sorted(k for k in tensors if "lora_B" in k)[:5]:
            dropped.append(key)
            del tensors[key]

    folder = _variant(files, tmp_path, "missing", drop)
    total = len(load_file(files["good"] / "adapter_model.safetensors"))
    with pytest.raises(IncompatibleAdapterError) as caught:
        export_merged_voice(files["base"], folder, tmp_path / "voice.pth")
    message = str(caught.value)
    assert message.startswith(f"{folder / 'adapter_model.safetensors'}: adapter 'default' (made for base ")
    assert f"5 of the adapter's {total} LoRA tensors are missing from the file (e.g. {dropped[0]}, {dropped[1]}, " \
           f"{dropped[2]}, ... 2 more); those layers would silently stay the plain base" in message


def test_unexpected_tensors_are_refused(files, tmp_path) -> None:
    def add(tensors):
        tensors["base_model.model.dec.no_such_layer.lora_A.weight"] = torch.zeros(2, 3)

    folder = _variant(files, tmp_path, "extra", add)
    with pytest.raises(IncompatibleAdapterError, match=r"extra/adapter_model\.safetensors: .*1 tensors in the file "
                                                       r"fit no layer of this model \(e\.g\. base_model\.model\.dec\."
                                                       r"no_such_layer\.lora_A\.weight\)"):
        export_merged_voice(files["base"], folder, tmp_path / "voice.pth")


def test_checks_also_run_in_peft_own_load_path(files, tmp_path) -> None:
    """PeftModel.from_pretrained without our entry points: the tuner's checks name the adapter instead."""
    def nan(tensors):
        key = min(k for k in tensors if "lora_B" in k)
        tensors[key][0] = float("nan")

    folder = _variant(files, tmp_path, "nan", nan)
    from rvc_peft.checkpoints import load_synthesizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(IncompatibleAdapterError, match=r"^adapter 'default': adapter 'default' tensor "
                                                           r"'base_model\.model\..*lora_B\.weight' contains NaN"):
            PeftModel.from_pretrained(load_synthesizer(files["base"]), str(folder))
        with pytest.raises(IncompatibleAdapterError, match=r"adapter 'default' .*: base_model\.model\.enc_p\."
                                                           r"emb_phone\.lora_A\.weight: adapter \[2, 256\] vs model"):
            PeftModel.from_pretrained(load_synthesizer(files["base"]), str(files["v1"]))


def test_voice_bank_refuses_with_the_file(files, tmp_path) -> None:
    folder = _variant(files, tmp_path, "nan_voice", lambda t: t.__setitem__(min(t), t[min(t)] * torch.inf))
    from rvc_peft.checkpoints import load_synthesizer

    bank = VoiceBank(load_synthesizer(files["base"]))
    with pytest.raises(VoiceError, match=r"cannot load voice 'nan_voice': .*nan_voice/adapter_model\.safetensors: "
                                         r"tensor '.*' contains (inf|NaN)"):
        bank.add_voice(folder)
    assert bank.names == []
    with pytest.raises(VoiceError, match=r"v1_no_facts/adapter_model\.safetensors: adapter 'v1_no_facts' .*RVC v1"):
        bank.add_voice(files["v1"])


@pytest.mark.parametrize("kind", ["pickled-bin", "bad-json", "truncated", "unknown-peft-type", "no-weights",
                                  "not-a-folder"])
def test_cli_export_prints_one_line_naming_the_file(files, tmp_path, capsys, kind) -> None:
    folder = tmp_path / "adapter"
    shutil.copytree(files["good"], folder)
    weights, config_file = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if kind == "pickled-bin":
        torch.save(load_file(weights), folder / "adapter_model.bin")
        weights.unlink()
        named, reason = folder / "adapter_model.bin", "refusing to read a pickle-format adapter"
    elif kind == "bad-json":
        config_file.write_text('{"peft_type": "LORA",')
        named, reason = config_file, "not valid JSON"
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:300])
        named, reason = weights, "not a readable safetensors file"
    elif kind == "unknown-peft-type":
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "peft_type": "NOT_A_TYPE"}))
        named, reason = config_file, "peft_type 'NOT_A_TYPE' is not a PEFT adapter type"
    elif kind == "no-weights":
        weights.unlink()
        named, reason = weights, "not found"
    else:
        shutil.rmtree(folder)
        folder.write_text("not a folder")
        named, reason = folder, "is a file, not an adapter folder"
    code = main(["export", "--base", str(files["base"]), "--adapter", str(folder), "--out", str(tmp_path / "v.pth")])
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("rvc-peft export: error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rvc-peft export: error: {named}: {reason}"), err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not (tmp_path / "v.pth").exists()
