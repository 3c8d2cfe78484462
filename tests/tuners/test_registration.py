"""Registration in PEFT: non-RVC models keep stock behaviour, and the PEFT internals we rely on are pinned."""

from __future__ import annotations

import dataclasses
import inspect

import peft
import peft.mapping
import peft.peft_model
import peft.utils.save_and_load
import pytest
import torch
from packaging.version import Version
from peft import LoraConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_MIXED_MODEL_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners import lora as peft_lora
from peft.tuners.lora import layer as peft_lora_layer
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import PeftType

import rvc_peft.tuners
from rvc_peft.tuners import RVCLoraConfig, RVCLoraModel, is_registered, register, stock_peft, unregister
from tests.tuners.toy_models import ALL_TARGETS, LinearOnly, ToyConvNet, randomize_lora, toy_inputs


def _names_and_types(model: torch.nn.Module) -> dict[str, str]:
    return {name: type(module).__name__ for name, module in model.named_modules()}


def test_registered_on_import() -> None:
    assert is_registered()
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] is RVCLoraModel
    assert PEFT_TYPE_TO_MIXED_MODEL_MAPPING[PeftType.LORA] is RVCLoraModel
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.LORA] is LoraConfig  # configs stay plain LoRA


def test_register_is_idempotent_and_reversible() -> None:
    register()
    assert is_registered()
    with stock_peft():
        assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] is peft_lora.LoraModel
        assert "push_to_hub" not in PeftModel.__dict__
    assert is_registered() and "push_to_hub" in PeftModel.__dict__
    unregister()
    unregister()
    try:
        assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LORA] is peft_lora.LoraModel
    finally:
        register()
    assert is_registered()


def test_linear_only_model_is_identical_to_stock_peft(tmp_path) -> None:
    x = torch.randn(4, 6)
    config = {"r": 4, "lora_alpha": 8, "target_modules": ["a", "b"], "lora_dropout": 0.0}

    def build() -> PeftModel:
        torch.manual_seed(3)
        model = get_peft_model(LinearOnly(), LoraConfig(**config))
        randomize_lora(model)
        return model

    ours = build()
    with stock_peft():
        stock = build()
        assert type(stock.base_model) is peft_lora.LoraModel
    assert type(ours.base_model) is RVCLoraModel
    assert _names_and_types(ours.base_model.model) == _names_and_types(stock.base_model.model)
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert list(ours_state) == list(stock_state)
    for key in ours_state:
        assert torch.equal(ours_state[key], stock_state[key]), key
    with torch.no_grad():
        assert torch.equal(ours(x), stock(x))
    ours.save_pretrained(tmp_path / "ours")
    with stock_peft():
        stock.save_pretrained(tmp_path / "stock")
    assert (tmp_path / "ours" / "adapter_config.json").read_text() == (tmp_path / "stock" / "adapter_config.json").read_text()
    assert not (tmp_path / "ours" / "rvc_adapter.json").exists()
    assert type(ours.peft_config["default"]) is LoraConfig  # not upgraded: not an RVC model


def test_plain_layers_of_non_rvc_models_stay_stock() -> None:
    model = get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=ALL_TARGETS))
    inner = model.base_model.model
    assert type(inner.lin) is peft_lora_layer.Linear
    assert type(inner.emb) is peft_lora_layer.Embedding
    assert type(inner.pre) is peft_lora_layer.Conv1d and type(inner.post) is peft_lora_layer.Conv1d  # plain convs: PEFT's layer
    assert type(inner.dil3) is rvc_peft.tuners.LoraConv1d  # dilated: PEFT's would crash
    assert type(inner.gconv) is rvc_peft.tuners.LoraConv1d  # grouped: PEFT's cannot merge
    assert type(inner.up1) is rvc_peft.tuners.LoraConvTranspose1d


def test_stock_peft_fails_where_we_work() -> None:
    """Documents why the override exists (if PEFT starts supporting these, the override can shrink)."""
    with stock_peft():
        with pytest.raises(ValueError, match=r"Target module .*ConvTranspose1d.* is not supported"):
            get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["up1"]))
        model = get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["dil3"], init_lora_weights=False))
        with pytest.raises(RuntimeError):
            model(*toy_inputs())


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_pinned_peft_internals() -> None:
    """Fails loudly if a PEFT upgrade changes an internal rvc_peft relies on (see rvc_peft/tuners/*)."""
    assert Version("0.21") <= Version(peft.__version__) < Version("0.22"), peft.__version__
    # the tuner registry, looked up at call time by every entry point
    assert isinstance(peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING, dict)
    assert isinstance(peft.mapping.PEFT_TYPE_TO_MIXED_MODEL_MAPPING, dict)
    assert "PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type]" in inspect.getsource(peft.peft_model.PeftModel.__init__)
    assert "PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]" in inspect.getsource(peft.utils.save_and_load)
    # LoraModel hooks we override or call
    assert isinstance(inspect.getattr_static(peft_lora.LoraModel, "_create_new_module"), staticmethod)
    assert _parameters(peft_lora.LoraModel._create_new_module) == ["lora_config", "adapter_name", "target", "kwargs"]
    assert _parameters(peft_lora.LoraModel._svd_generalized_task_arithmetic_weighted_adapter) == [
        "self", "combination_type", "adapters", "weights", "new_rank", "target", "target_lora_A", "target_lora_B",
        "density", "majority_sign_method", "clamp", "full_matrices", "driver",
    ]
    assert _parameters(peft_lora.LoraModel.add_weighted_adapter)[:5] == [
        "self", "adapters", "weights", "adapter_name", "combination_type",
    ]
    assert _parameters(BaseTuner.inject_adapter) == [
        "self", "model", "adapter_name", "autocast_adapter_dtype", "low_cpu_mem_usage", "state_dict",
    ]
    assert _parameters(BaseTuner._unload_and_optionally_merge) == [
        "self", "merge", "progressbar", "safe_merge", "adapter_names",
    ]
    assert _parameters(peft_lora.LoraModel._prepare_adapter_config) == ["self", "peft_config", "model_config"]
    assert _parameters(BaseTuner._remap_adapter_state_dict_for_load) == ["model", "config", "adapter_name", "state_dict"]
    assert "self.base_model.inject_adapter(" in inspect.getsource(peft.peft_model.PeftModel.add_adapter)
    # add_weighted_adapter still builds the new config with dataclasses.replace and calls our SVD hook
    source = inspect.getsource(peft_lora.LoraModel.add_weighted_adapter)
    assert "replace(" in source and "self._svd_generalized_task_arithmetic_weighted_adapter(" in source
    assert "target_lora_A.data[: loras_A.shape[0], :] = loras_A" in source  # the flat "cat" we regroup
    # LoraLayer conventions our layers follow
    layer = peft_lora.LoraLayer
    assert {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"} <= set(layer.adapter_layer_names)
    assert {"r", "lora_alpha", "scaling", "lora_dropout", "lora_bias"} <= set(layer.other_param_names)
    assert _parameters(layer.reset_lora_parameters) == ["self", "adapter_name", "init_lora_weights"]
    assert _parameters(layer._mixed_batch_forward) == ["self", "x", "args", "adapter_names", "kwargs"]
    assert _parameters(layer._check_forward_args) == ["self", "x", "args", "kwargs"]
    assert _parameters(layer.resolve_lora_variant) == ["self", "config", "kwargs"]
    assert hasattr(peft_lora.layer, "VARIANT_KWARG_KEYS")
    assert "_get_in_out_features(base_layer)" in inspect.getsource(layer.__init__)
    # the stock dispatch still cannot handle ConvTranspose1d (else our override could shrink)
    assert "ConvTranspose1d" not in inspect.getsource(peft_lora_layer.dispatch_default)
    # configs: auto_mapping carries our RVC facts; save_pretrained passes auto_mapping_dict through
    assert "auto_mapping" in {f.name for f in dataclasses.fields(LoraConfig)}
    assert "peft_config.save_pretrained(output_dir, auto_mapping_dict=auto_mapping_dict)" in inspect.getsource(
        peft.peft_model.PeftModel.save_pretrained
    )
    assert hasattr(LoraConfig(), "_custom_modules")
    # hot-swapping copies same-shape tensors in place
    from peft.utils import hotswap

    assert _parameters(hotswap.hotswap_adapter_from_state_dict) == [
        "model", "state_dict", "adapter_name", "config", "parameter_prefix",
    ]
    # push_to_hub comes from transformers' mixin (we route RVC adapters through our own upload)
    assert "push_to_hub" in PeftModel.__dict__ and PeftModel.push_to_hub is rvc_peft.tuners.registration._rvc_push_to_hub
    assert _parameters(rvc_peft.tuners.registration._saved["push_to_hub"])[:2] == ["self", "repo_id"]


def test_rvc_config_works_without_the_registered_tuner() -> None:
    """PEFT's mixed models (and stock_peft()) bypass the tuner registry; RVCLoraConfig's custom-module fallback covers
    them (plain LoraConfig cannot: PEFT's MixedModel hard-codes LoraModel._create_new_module)."""
    model = get_peft_model(ToyConvNet(), RVCLoraConfig(r=2, target_modules=["up1", "dil3", "pre"]), mixed=True)
    inner = model.base_model.model
    assert isinstance(inner.up1, rvc_peft.tuners.LoraConvTranspose1d)
    assert type(inner.dil3) is rvc_peft.tuners.LoraConv1d and type(inner.pre) is peft_lora_layer.Conv1d
    with stock_peft():
        stock = get_peft_model(ToyConvNet(), RVCLoraConfig(r=2, target_modules=["up1", "dil3"]))
        assert type(stock.base_model) is peft_lora.LoraModel
        assert isinstance(stock.base_model.model.up1, rvc_peft.tuners.LoraConvTranspose1d)
    randomize_lora(model)
    x, speaker = toy_inputs()
    with torch.no_grad():
        assert model(x, speaker).shape == (3, 1, 160)


def test_push_to_hub_routes_only_rvc_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    from rvc_peft.testing import random_synthesizer, small_config
    from rvc_peft.tuners import api, registration

    calls: list[tuple[str, str]] = []
    monkeypatch.setitem(registration._saved, "push_to_hub", lambda self, repo_id, **kw: calls.append(("stock", repo_id)))
    monkeypatch.setattr(api, "push_adapter_to_hub", lambda model, repo_id, **kw: calls.append(("rvc", repo_id)))
    get_peft_model(LinearOnly(), LoraConfig(r=2, target_modules=["a"])).push_to_hub("org/plain")
    get_peft_model(random_synthesizer(small_config()), LoraConfig(r=2)).push_to_hub("org/voice", private=True)
    assert calls == [("stock", "org/plain"), ("rvc", "org/voice")]
