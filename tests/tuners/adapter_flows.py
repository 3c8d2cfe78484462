"""Adapter flows on a small RVC synthesizer, split across two processes (run by test_adapter_flows.py).

`make(OUT)` (the test process): build and save bases in RVC's on-disk format, make adapters in every supported way,
              save them and record reference outputs in OUT/expected.pt.
`check OUT [--hub]` (a fresh process): push one saved adapter to the fake hub with `rvc_peft.push_adapter_to_hub` (when
              --hub: HF_ENDPOINT must point at it), then load everything back through each loading path, the hub id
              included, and write OUT/results.json ({check name: max abs difference to the reference, or the error}).
`reload BASE ADAPTER INPUTS OUT` (a fresh process, any size): `PeftModel.from_pretrained` of one adapter folder onto
              the base file loaded anew, the output for the saved INPUTS written to OUT (used by the full-size test).

Every output is `RVCSynthesizer.infer` with the noise seeded, so equal weights give bit-equal audio.
"""

from __future__ import annotations

import copy
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

from peft import LoraConfig, PeftModel, get_peft_model

import rvc_peft
import rvc_peft.tuners
from rvc_peft.checkpoints import load_synthesizer, save_rvc_checkpoint
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora, small_config
from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model, set_training_summary

TRAINING = {"steps": 1200, "epochs": 30, "learning_rate": 1e-4, "dataset": "voice-x (12 min)"}


def run(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(1234)
    with torch.no_grad():
        return model.infer(**inputs)[0]


def make(out: Path) -> None:
    config = small_config()
    bases = out / "bases"
    save_rvc_checkpoint(random_synthesizer(config, seed=0), bases / "f0G40k.pth", kind="base")
    save_rvc_checkpoint(random_synthesizer(small_config("v1"), seed=0), bases / "f0G40k_v1.pth", kind="base")
    save_rvc_checkpoint(random_synthesizer(small_config(sampling_rate=48000), seed=0), bases / "f0G48k.pth", kind="base")
    save_rvc_checkpoint(random_synthesizer(config, seed=5), bases / "other_f0G40k.pth", kind="base")
    base_path = bases / "f0G40k.pth"
    inputs = random_inputs(config, frames=24, batch=2)
    loaded_base = load_synthesizer(base_path)
    expected: dict[str, Any] = {"inputs": inputs, "base": run(loaded_base, inputs)}

    # a: plain LoraConfig on the unfolded (weight-normed) base; no target_modules -> the "generator" preset
    voice_a = get_peft_model(copy.deepcopy(loaded_base), LoraConfig(r=4, lora_alpha=8))
    randomize_lora(voice_a, seed=1, scale=0.1)
    set_training_summary(voice_a, TRAINING)
    expected["voice_a"] = run(voice_a, inputs)
    voice_a.save_pretrained(out / "voice_a")
    sizes = {"voice_a": sum(p.numel() for n, p in voice_a.named_parameters() if ".lora_" in n)}

    # b: RVCLoraConfig, same rank/alpha as a (hot-swappable with it)
    voice_b = get_peft_model(copy.deepcopy(loaded_base), RVCLoraConfig(r=4, lora_alpha=8))
    randomize_lora(voice_b, seed=2, scale=0.1)
    expected["voice_b"] = run(voice_b, inputs)
    voice_b.save_pretrained(out / "voice_b")

    # flow: "after weight-norm removal" (folded base), generator+flow preset
    # (a fresh load, not a deepcopy: torch's parametrized classes are shared by deep copies, and removing the
    # parametrization from one copy breaks the other)
    voice_flow = get_rvc_peft_model(load_synthesizer(base_path), RVCLoraConfig(target_modules="generator+flow", r=4))
    randomize_lora(voice_flow, seed=3, scale=0.1)
    expected["voice_flow"] = run(voice_flow, inputs)
    voice_flow.save_pretrained(out / "voice_flow")

    # transformers' own adapter API on the PreTrainedModel
    tf_model = copy.deepcopy(loaded_base)
    tf_model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules="all"), adapter_name="default")
    randomize_lora(tf_model, seed=4, scale=0.1)
    expected["voice_tf"] = run(tf_model, inputs)
    tf_model.save_pretrained(out / "voice_tf")

    torch.save(expected, out / "expected.pt")
    (out / "made.json").write_text(json.dumps({"sizes": sizes}))


def check(out: Path, with_hub: bool) -> None:
    expected = torch.load(out / "expected.pt", weights_only=True)
    inputs = expected["inputs"]
    base_path = out / "bases" / "f0G40k.pth"
    results: dict[str, Any] = {}

    def record(name: str, fn) -> None:
        try:
            results[name] = fn()
        except Exception as error:  # noqa: BLE001 - every failure becomes a readable test failure
            results[name] = f"ERROR {type(error).__name__}: {error}\n{traceback.format_exc(limit=4)}"

    def diff(model: torch.nn.Module, key: str) -> float:
        return float((run(model, inputs) - expected[key]).abs().max())

    loaded_base = load_synthesizer(base_path)

    def base() -> torch.nn.Module:  # a fresh copy of the base as load_synthesizer returns it (reading is slower)
        return copy.deepcopy(loaded_base)

    def from_dir() -> dict[str, Any]:
        model = PeftModel.from_pretrained(base(), str(out / "voice_a"))
        ups = model.base_model.model.dec.ups[0]
        report = {"diff": diff(model, "voice_a"), "ups_layer": type(ups).__name__}
        model.load_adapter(str(out / "voice_b"), adapter_name="b")
        report["after_load_adapter_still_a"] = diff(model, "voice_a")
        model.set_adapter("b")
        report["set_adapter_b"] = diff(model, "voice_b")
        with model.disable_adapter():
            report["disable_adapter"] = diff(model, "base")
        model.set_adapter("default")
        model.delete_adapter("b")
        report["after_delete"] = diff(model, "voice_a")
        report["adapters_left"] = sorted(model.peft_config)
        from peft.utils.hotswap import hotswap_adapter

        hotswap_adapter(model, str(out / "voice_b"), adapter_name="default", torch_device="cpu")
        report["hotswap_to_b"] = diff(model, "voice_b")
        return report

    def merged() -> dict[str, Any]:
        model = PeftModel.from_pretrained(base(), str(out / "voice_a")).merge_and_unload()
        ups = model.dec.ups[0]
        return {"diff": diff(model, "voice_a"), "merged_type": type(model).__name__,
                "weight_norm_kept": torch.nn.utils.parametrize.is_parametrized(ups, "weight")}

    def trainable_reload() -> dict[str, Any]:
        model = PeftModel.from_pretrained(base(), str(out / "voice_a"), is_trainable=True, low_cpu_mem_usage=True)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        return {"diff": diff(model, "voice_a"), "meta": [n for n, p in model.named_parameters() if p.is_meta],
                "all_trainable_are_lora": bool(trainable) and all(".lora_" in n for n in trainable)}

    def transformers_api() -> dict[str, Any]:
        model = base()
        model.load_adapter(str(out / "voice_tf"), adapter_name="tf")
        report = {"load_adapter": diff(model, "voice_tf")}
        model.load_adapter(str(out / "voice_a"), adapter_name="a")
        model.set_adapter("a")
        report["set_adapter_a"] = diff(model, "voice_a")
        model.disable_adapters()
        report["disable_adapters"] = diff(model, "base")
        model.enable_adapters()
        model.delete_adapter("a")
        model.set_adapter("tf")
        report["after_delete"] = diff(model, "voice_tf")
        report["peft_from_tf_folder"] = diff(PeftModel.from_pretrained(base(), str(out / "voice_tf")), "voice_tf")
        return report

    def wrong_base(name: str) -> str:
        try:
            PeftModel.from_pretrained(load_synthesizer(out / "bases" / name), str(out / "voice_a"))
        except rvc_peft.tuners.IncompatibleAdapterError as error:
            return f"IncompatibleAdapterError: {error}"
        return "loaded without error"

    def other_weights() -> dict[str, Any]:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            PeftModel.from_pretrained(load_synthesizer(out / "bases" / "other_f0G40k.pth"), str(out / "voice_a"))
        return {"warnings": [str(w.message) for w in caught if "different" in str(w.message)]}

    def export_cli() -> dict[str, Any]:
        from rvc_peft.cli import main

        voice = out / "voice_a.pth"
        status = main(["export", "--base", str(base_path), "--adapter", str(out / "voice_a"), "--out", str(voice),
                       "--info", "voice a"])
        raw = torch.load(voice, map_location="cpu", weights_only=True)
        loaded = load_synthesizer(voice)
        reference = PeftModel.from_pretrained(base(), str(out / "voice_a")).merge_and_unload()
        return {
            "status": status, "keys": sorted(raw), "info": raw.get("info"), "sr": raw.get("sr"),
            "f0": raw.get("f0"), "version": raw.get("version"),
            "dtypes": sorted({str(t.dtype) for t in raw["weight"].values()}),
            "has_weight_g": any(k.endswith(".weight_g") for k in raw["weight"]),
            "has_enc_q": any(k.startswith("enc_q.") for k in raw["weight"]),
            "diff_to_adapter": diff(loaded, "voice_a"),
            "diff_to_fp16_merged": float((run(loaded, inputs) - run(reference.half().float(), inputs)).abs().max()),
            "file_kind": loaded.config.rvc_file_kind,
        }

    def push() -> str:
        return str(rvc_peft.push_adapter_to_hub(PeftModel.from_pretrained(base(), str(out / "voice_a")), "org/voice"))

    def from_hub() -> dict[str, Any]:
        model = PeftModel.from_pretrained(base(), "org/voice")  # downloaded: the hub cache starts empty
        info = rvc_peft.tuners.read_adapter_info("org/voice")
        return {"diff": diff(model, "voice_a"), "training": info.get("training"),
                "fingerprint": info["base_model"]["fingerprint"]}

    record("from_dir", from_dir)
    record("merged", merged)
    record("trainable_reload", trainable_reload)
    record("folded_adapter_on_unfolded_base", lambda: diff(PeftModel.from_pretrained(base(), str(out / "voice_flow")),
                                                           "voice_flow"))
    record("transformers_api", transformers_api)
    record("wrong_version", lambda: wrong_base("f0G40k_v1.pth"))
    record("wrong_rate", lambda: wrong_base("f0G48k.pth"))
    record("other_weights", other_weights)
    record("export_cli", export_cli)
    record("fingerprint_of_base", lambda: rvc_peft.tuners.base_model_fingerprint(base()))
    if with_hub:
        record("push", push)
        record("from_hub", from_hub)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


def reload(base_path: Path, adapter: Path, inputs_path: Path, out_path: Path) -> None:
    model = PeftModel.from_pretrained(load_synthesizer(base_path), str(adapter))
    inputs = torch.load(inputs_path, weights_only=True)
    torch.save({"audio": run(model, inputs), "ups_layer": type(model.base_model.model.dec.ups[0]).__name__}, out_path)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "reload":
        reload(*(Path(arg) for arg in sys.argv[2:6]))
    else:
        check(Path(sys.argv[2]), with_hub="--hub" in sys.argv)
