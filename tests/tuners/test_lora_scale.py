"""PEFT's scale controls on rvc_peft's 1-D conv LoRA layers: `set_scale`, `scale_layer` / `unscale_layer` and
`peft.helpers.rescale_adapter_scale`. In float64, so the outputs must match the independent reference to 1e-12.

PEFT's convention: `set_scale(adapter, s)` sets scaling to s·alpha/r (s·alpha/√r with rslora), i.e. relative to the
configured scaling, not to the current one; `scale_layer(s)` multiplies the current scaling of the active adapters;
`unscale_layer(s)` divides it, `unscale_layer(None)` resets it to alpha/r.
"""

from __future__ import annotations

import pytest
import torch
from peft.helpers import rescale_adapter_scale
from peft.tuners.lora.layer import LoraLayer

import rvc_peft.tuners  # noqa: F401  (registers the tuner)
from tests.tuners.lora_reference import (
    LAYERS,
    SCALES,
    adapted_layer,
    reference_base,
    reference_branch,
    reference_delta,
)

EXACT = {"atol": 1e-12, "rtol": 0.0}


def _inputs(layer: LoraLayer, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(batch, layer.get_base_layer().in_channels, 9, generator=generator, dtype=torch.float64)


def _expected(layer: LoraLayer, x: torch.Tensor, adapter: str, scale: float) -> torch.Tensor:
    return reference_base(layer, x) + reference_branch(layer, x, adapter, scale)


@pytest.mark.parametrize("name", LAYERS)
def test_set_scale_forward_merge_and_unmerge(name: str) -> None:
    model, layer = adapted_layer(name, torch.float64)
    base = layer.get_base_layer()
    x = _inputs(layer)
    original_weight = base.weight.detach().clone()
    for adapter, factor in (("voice1", 0.35), ("voice2", -1.7)):  # voice2 uses rslora: s·alpha/√r
        model.set_adapter(adapter)
        layer.set_scale(adapter, factor)
        scale = factor * SCALES[adapter]
        assert layer.scaling[adapter] == pytest.approx(scale, rel=1e-15)
        with torch.no_grad():
            expected = _expected(layer, x, adapter, scale)  # before merging: the reference reads the base weight
            delta = reference_delta(layer, adapter, scale)
            torch.testing.assert_close(model(x), expected, **EXACT)
            torch.testing.assert_close(layer.get_delta_weight(adapter), delta, **EXACT)
            # merging uses the new scale, and unmerging (same scale) takes exactly that back out
            model.merge_adapter()
            torch.testing.assert_close(base.weight, original_weight + delta, **EXACT)
            torch.testing.assert_close(model(x), expected, **EXACT)
            model.unmerge_adapter()
            torch.testing.assert_close(base.weight, original_weight, **EXACT)
    # set_scale is relative to the configured alpha/r, not cumulative
    layer.set_scale("voice1", 1.0)
    assert layer.scaling["voice1"] == pytest.approx(SCALES["voice1"], rel=1e-15)


@pytest.mark.parametrize("name", ["conv_grouped", "convT_plain", "convT_grouped"])
def test_mixed_batch_uses_the_set_scales(name: str) -> None:
    model, layer = adapted_layer(name, torch.float64)
    layer.set_scale("voice1", 0.5)
    layer.set_scale("voice2", 3.0)
    x = _inputs(layer, batch=3)
    routing = ["voice2", "voice1", "__base__"]
    with torch.no_grad():
        mixed = model(x, adapter_names=routing)
    for row, adapter in enumerate(routing):
        sample = x[row:row + 1]
        expected = reference_base(layer, sample)
        if adapter != "__base__":
            factor = 0.5 if adapter == "voice1" else 3.0
            expected = expected + reference_branch(layer, sample, adapter, factor * SCALES[adapter])
        torch.testing.assert_close(mixed[row:row + 1], expected, **EXACT, msg=f"row {row} ({adapter})")


@pytest.mark.parametrize("name", ["conv_dilated", "conv_weight_norm", "convT_weight_norm"])
def test_scale_layer_and_unscale_layer(name: str) -> None:
    model, layer = adapted_layer(name, torch.float64)  # voice1 active
    x = _inputs(layer)
    layer.scale_layer(3.0)
    assert layer.scaling == pytest.approx({"voice1": 3 * SCALES["voice1"], "voice2": SCALES["voice2"]}, rel=1e-15)
    with torch.no_grad():
        expected = _expected(layer, x, "voice1", 3 * SCALES["voice1"])
        torch.testing.assert_close(model(x), expected, **EXACT)
        model.merge_adapter()  # merges with the multiplied scale
        torch.testing.assert_close(model(x), expected, **EXACT)
        model.unmerge_adapter()
    layer.unscale_layer(2.0)
    assert layer.scaling["voice1"] == pytest.approx(1.5 * SCALES["voice1"], rel=1e-15)
    layer.unscale_layer(None)
    assert layer.scaling == pytest.approx(SCALES, rel=1e-15)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _expected(layer, x, "voice1", SCALES["voice1"]), **EXACT)


@pytest.mark.parametrize("name", ["conv_legacy_weight_norm", "convT_grouped"])
def test_rescale_adapter_scale_context(name: str) -> None:
    model, layer = adapted_layer(name, torch.float64)
    model.set_adapter("voice2")
    x = _inputs(layer)
    with torch.no_grad():
        before = model(x)
        with rescale_adapter_scale(model, 0.25):
            scaled = model(x)
        after = model(x)
    torch.testing.assert_close(scaled, _expected(layer, x, "voice2", 0.25 * SCALES["voice2"]), **EXACT)
    torch.testing.assert_close(after, before, atol=0.0, rtol=0.0)
    torch.testing.assert_close(before, _expected(layer, x, "voice2", SCALES["voice2"]), **EXACT)
