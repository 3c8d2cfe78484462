"""add_weighted_adapter ("cat", "svd", "linear") on every layer kind, grouped 1-D convs included."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Conv1d as PeftConv1d
from peft.tuners.lora.layer import LoraLayer

import rvc_peft.tuners  # noqa: F401
from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import LoraConvTranspose1d
from rvc_peft.tuners.lora.layer import _LoraConv1dBase
from tests.tuners.toy_models import ALL_TARGETS, RVCStyleToyConvNet, toy_inputs

WEIGHTS = [0.7, -0.4]


def _two_adapters(rank_a: int = 2, rank_b: int = 4, alpha_b: int = 2):
    # an RVC network, so the grouped Conv1d gets rvc_peft's layer too
    model = get_peft_model(RVCStyleToyConvNet("parametrized").double(), LoraConfig(r=rank_a, lora_alpha=4,
                                                                                   target_modules=ALL_TARGETS))
    model.add_adapter("b", LoraConfig(r=rank_b, lora_alpha=alpha_b, target_modules=ALL_TARGETS))
    randomize_lora(model, scale=0.3)
    return model


def _lora_layers(model) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.base_model.model.named_modules() if isinstance(m, LoraLayer)}


def _delta(layer: LoraLayer, adapter: str) -> torch.Tensor:
    delta = layer.get_delta_weight(adapter)
    return delta.T if adapter in layer.lora_embedding_A else delta  # PEFT's embedding delta is transposed


def _group_matrices(layer: _LoraConv1dBase, delta: torch.Tensor) -> torch.Tensor:
    """Per-group matrices [g, out/g, in/g·k] of a conv delta (the object whose SVD "svd" truncates)."""
    groups = layer.get_base_layer().groups
    if isinstance(layer, LoraConvTranspose1d):
        in_channels, out_per_group, k = delta.shape
        return delta.reshape(groups, in_channels // groups, out_per_group, k).permute(0, 2, 1, 3).reshape(
            groups, out_per_group, -1)
    return delta.reshape(groups, delta.shape[0] // groups, -1)


def test_cat_is_exact_on_every_layer_including_grouped() -> None:
    model = _two_adapters()
    model.add_weighted_adapter(["default", "b"], WEIGHTS, "cat", combination_type="cat")
    for name, layer in _lora_layers(model).items():
        expected = WEIGHTS[0] * _delta(layer, "default") + WEIGHTS[1] * _delta(layer, "b")
        torch.testing.assert_close(_delta(layer, "cat"), expected, atol=1e-12, rtol=0, msg=name)
    assert model.base_model.model.gup.r["cat"] == 6  # ranks add up


def test_full_rank_svd_is_exact_and_truncated_svd_is_optimal_per_group() -> None:
    # ranks 2 + 2: rank 4 keeps everything (PEFT's own SVD, used for Linear/Embedding, needs rank <= min(in, out))
    model = _two_adapters(rank_a=2, rank_b=2)
    model.add_weighted_adapter(["default", "b"], WEIGHTS, "svd_full", combination_type="svd", svd_rank=4)
    model.add_weighted_adapter(["default", "b"], WEIGHTS, "svd_2", combination_type="svd", svd_rank=2)
    for name, layer in _lora_layers(model).items():
        expected = WEIGHTS[0] * _delta(layer, "default") + WEIGHTS[1] * _delta(layer, "b")
        if not isinstance(layer, (_LoraConv1dBase, PeftConv1d)):
            # PEFT's own SVD (Linear, Embedding) mixes with float32 weights: float32 precision only
            torch.testing.assert_close(_delta(layer, "svd_full"), expected, atol=1e-6, rtol=0, msg=name)
            continue
        torch.testing.assert_close(_delta(layer, "svd_full"), expected, atol=1e-10, rtol=0, msg=name)
        if not isinstance(layer, _LoraConv1dBase):
            continue
        # Eckart–Young per group: the error is exactly the discarded singular values
        groups = layer.get_base_layer().groups
        matrices = _group_matrices(layer, expected)
        kept = 2 // groups
        optimal = torch.linalg.svdvals(matrices)[:, kept:].square().sum().sqrt()
        error = (_group_matrices(layer, _delta(layer, "svd_2")) - matrices).norm()
        torch.testing.assert_close(error, optimal, atol=1e-10, rtol=1e-8, msg=name)
        assert error > 1e-3  # truncation really happened


def test_linear_matches_a_hand_built_adapter() -> None:
    model = _two_adapters(rank_a=2, rank_b=2, alpha_b=6)
    model.add_weighted_adapter(["default", "b"], [0.6, 0.3], "blend", combination_type="linear")
    model.add_adapter("manual", LoraConfig(r=2, lora_alpha=2, target_modules=ALL_TARGETS))
    with torch.no_grad():
        for layer in _lora_layers(model).values():
            coefficients = [(0.6 * layer.scaling["default"]) ** 0.5, (0.3 * layer.scaling["b"]) ** 0.5]
            if "manual" in layer.lora_A:
                for part in ("lora_A", "lora_B"):
                    modules = getattr(layer, part)
                    modules["manual"].weight.copy_(sum(c * modules[a].weight for c, a in zip(coefficients, ["default", "b"])))
            else:
                for part in ("lora_embedding_A", "lora_embedding_B"):
                    params = getattr(layer, part)
                    params["manual"].copy_(sum(c * params[a] for c, a in zip(coefficients, ["default", "b"])))
    x, speaker = toy_inputs()
    outputs = {}
    with torch.no_grad():
        for adapter in ("blend", "manual"):
            model.set_adapter(adapter)
            outputs[adapter] = model(x.double(), speaker)
    # PEFT builds the mixing coefficients as a float32 tensor, so agreement is to float32 precision
    torch.testing.assert_close(outputs["blend"], outputs["manual"], atol=1e-6, rtol=0)


def test_weighted_adapter_on_rvc_synthesizer_blends_two_voices() -> None:
    from rvc_peft.testing import random_inputs, random_synthesizer, small_config
    from rvc_peft.tuners import RVCLoraConfig
    from rvc_peft.tuners.provenance import facts_of_config

    config = small_config()
    model = get_peft_model(random_synthesizer(config), RVCLoraConfig(r=4, lora_alpha=8), adapter_name="voice1")
    model.add_adapter("voice2", RVCLoraConfig(r=4, lora_alpha=8))
    randomize_lora(model, scale=0.05)
    inputs = random_inputs(config, frames=16)

    def run(adapter: str) -> torch.Tensor:
        model.set_adapter(adapter)
        torch.manual_seed(0)
        with torch.no_grad():
            return model.infer(**inputs)[0]

    model.add_weighted_adapter(["voice1", "voice2"], [0.5, 0.5], "cat", combination_type="cat")
    model.add_weighted_adapter(["voice1", "voice2"], [0.5, 0.5], "svd", combination_type="svd", svd_rank=8)
    torch.testing.assert_close(run("svd"), run("cat"), atol=1e-5, rtol=0)
    assert (run("cat") - run("voice1")).abs().max() > 1e-4
    facts = facts_of_config(model.peft_config["svd"])
    assert facts["training"] == {"combined_from": ["voice1", "voice2"], "weights": [0.5, 0.5],
                                 "combination_type": "svd"}
    assert facts_of_config(model.peft_config["voice1"])["training"] is None  # the source adapter is untouched


@pytest.mark.parametrize("combination", ["ties_svd", "magnitude_prune_svd"])
def test_svd_variants_run_on_conv_layers(combination: str) -> None:
    model = _two_adapters()
    model.add_weighted_adapter(["default", "b"], WEIGHTS, "mix", combination_type=combination, density=0.5)
    assert isinstance(model.base_model.model.up1, LoraConvTranspose1d) and "mix" in model.base_model.model.up1.lora_A
    assert torch.isfinite(_delta(model.base_model.model.gup, "mix")).all()
