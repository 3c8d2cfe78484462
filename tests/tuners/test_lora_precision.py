"""rvc_peft's Conv1d / ConvTranspose1d LoRA layers in float16 and bfloat16 (on CPU: torch 2.13 has CPU kernels for
conv1d, conv_transpose1d, reflect padding and weight norm in both dtypes, so everything below runs on CPU).

Every check compares against a float64 computation from the same low-precision tensors (`lora_reference`), with a
tolerance of a few units of the dtype's epsilon times the size of the compared values. Measured: deltas are
correctly rounded (≤ 0.5 ulp), forwards (merged or not) and restored weights within 0.9 eps of the output's (weight's)
largest entry; the tolerances below leave about 2× headroom, while the adapter's effect is 50–1200 eps.
"""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora.layer import LoraLayer
from torch.nn.utils import parametrize

import rvc_peft.tuners  # noqa: F401  (registers the tuner)
from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import LoraConv1d, LoraConvTranspose1d
from tests.tuners.lora_reference import (
    LAYERS,
    SCALES,
    adapted_layer,
    reference_base,
    reference_branch,
    reference_delta,
)

HALF_DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
# forward outputs and restored weights: this many eps of the largest compared value (measured ≤ 0.9)
ULPS_OF_MAX = 2.0

def _inputs(layer: LoraLayer, dtype: torch.dtype, batch: int = 3) -> torch.Tensor:
    """x [batch, in, 11] in `dtype`."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, layer.get_base_layer().in_channels, 11, generator=generator).to(dtype)


def _assert_close_to_max(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> float:
    """|actual − expected| ≤ ULPS_OF_MAX · eps(dtype) · max|expected| everywhere; returns that tolerance."""
    tolerance = ULPS_OF_MAX * torch.finfo(dtype).eps * expected.abs().max().item()
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= tolerance, f"{what}: max error {error:.3g} > {tolerance:.3g}"
    return tolerance


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_half_delta_weight_is_the_correctly_rounded_composition(name: str, dtype: torch.dtype) -> None:
    model, layer = adapted_layer(name, dtype)
    assert {param.dtype for param in model.parameters()} == {dtype}  # the adapters were created in the base's dtype
    for adapter, scale in SCALES.items():
        delta = layer.get_delta_weight(adapter)
        assert delta.dtype == dtype and delta.shape == layer.get_base_layer().weight.shape
        expected = reference_delta(layer, adapter, scale)
        # at most one ulp from the exact value (measured: ≤ 0.5 ulp, i.e. correctly rounded)
        torch.testing.assert_close(delta.double(), expected, rtol=torch.finfo(dtype).eps, atol=1e-7, msg=adapter)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_half_merge_forward_unmerge(name: str, dtype: torch.dtype) -> None:
    model, layer = adapted_layer(name, dtype)
    base = layer.get_base_layer()
    x = _inputs(layer, dtype)
    original_weight = base.weight.detach().clone()
    with torch.no_grad():
        base_reference = reference_base(layer, x)
        expected = base_reference + reference_branch(layer, x, "voice1", SCALES["voice1"])
        unmerged = model(x)
        model.merge_adapter()
        merged = model(x)
        merged_weight = base.weight.detach().clone()
        model.unmerge_adapter()
        restored_weight = base.weight.detach().clone()
    assert unmerged.dtype == merged.dtype == dtype
    tolerance = _assert_close_to_max(unmerged, expected, dtype, "unmerged forward")
    _assert_close_to_max(merged, expected, dtype, "merged forward")
    _assert_close_to_max(merged, unmerged, dtype, "merged vs unmerged")
    assert (expected - base_reference).abs().max() > 10 * tolerance  # the adapter changes far more than the tolerance
    # the merged weight is W + ΔW, rounded
    delta = reference_delta(layer, "voice1", SCALES["voice1"])
    _assert_close_to_max(merged_weight, original_weight.double() + delta, dtype, "merged weight")
    # unmerging restores W up to rounding of W + ΔW, and the layer keeps its dtype (and its weight norm)
    assert restored_weight.dtype == dtype
    restored_error = (restored_weight.double() - original_weight.double()).abs().max().item()
    bound = ULPS_OF_MAX * torch.finfo(dtype).eps * (original_weight.abs().max().item() + delta.abs().max().item())
    assert restored_error <= bound, f"restored weight off by {restored_error:.3g} > {bound:.3g}"
    assert {param.dtype for param in base.parameters()} == {dtype}
    if "legacy" in name:
        assert base.weight_g.dtype == base.weight_v.dtype == dtype
    elif "weight_norm" in name:
        assert parametrize.is_parametrized(base, "weight")


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_half_mixed_batch_equals_per_sample_forwards(name: str, dtype: torch.dtype) -> None:
    model, layer = adapted_layer(name, dtype)
    x = _inputs(layer, dtype, batch=4)
    routing = ["voice1", "__base__", "voice2", "voice1"]
    with torch.no_grad():
        mixed = model(x, adapter_names=routing)
        separate = {}
        for adapter in SCALES:
            model.set_adapter(adapter)
            separate[adapter] = model(x)
        with model.disable_adapter():
            separate["__base__"] = model(x)
    assert mixed.dtype == dtype
    for row, adapter in enumerate(routing):
        _assert_close_to_max(mixed[row], separate[adapter][row], dtype, f"row {row} ({adapter})")
        expected = reference_base(layer, x[row:row + 1])[0]
        if adapter != "__base__":
            expected = expected + reference_branch(layer, x[row:row + 1], adapter, SCALES[adapter])[0]
        _assert_close_to_max(mixed[row], expected, dtype, f"row {row} ({adapter}) vs float64")
    assert (separate["voice1"] - separate["voice2"]).abs().max() > 0.05  # the rows really differ by adapter


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("name", ["conv_grouped", "conv_legacy_weight_norm", "convT_grouped", "convT_weight_norm"])
def test_float32_adapter_on_half_base(name: str, dtype: torch.dtype) -> None:
    """PEFT's default (autocast_adapter_dtype=True): float32 LoRA weights on a half-precision base layer."""
    model, layer = adapted_layer(name, dtype, autocast_adapter_dtype=True)
    assert layer.lora_A["voice1"].weight.dtype == layer.lora_B["voice1"].weight.dtype == torch.float32
    base = layer.get_base_layer()
    x = _inputs(layer, dtype)
    original_weight = base.weight.detach().clone()
    with torch.no_grad():
        expected = reference_base(layer, x) + reference_branch(layer, x, "voice1", SCALES["voice1"])
        unmerged = model(x)
        model.merge_adapter()
        merged = model(x)
        model.unmerge_adapter()
    assert unmerged.dtype == merged.dtype == base.weight.dtype == dtype
    _assert_close_to_max(unmerged, expected, dtype, "unmerged forward")
    _assert_close_to_max(merged, expected, dtype, "merged forward")
    delta = reference_delta(layer, "voice1", SCALES["voice1"])
    bound = ULPS_OF_MAX * torch.finfo(dtype).eps * (original_weight.abs().max().item() + delta.abs().max().item())
    assert (base.weight.detach().double() - original_weight.double()).abs().max().item() <= bound


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_rvc_synthesizer_merge_unmerge_and_mixed_batch(dtype: torch.dtype) -> None:
    """A tiny v2 synthesizer in half precision with every conv adapted: merge, unmerge and per-row voices.

    Through the whole network rounding compounds (measured: merged vs unmerged audio ≤ 6.5 eps of its peak, mixed-batch
    rows ≤ 3.4 eps), so these tolerances are wider than the single-layer ones above.
    """
    from peft import get_peft_model

    from rvc_peft.testing import random_inputs, random_synthesizer, small_config
    from rvc_peft.tuners import RVCLoraConfig

    config = small_config()
    model = get_peft_model(random_synthesizer(config).to(dtype), RVCLoraConfig(r=4, lora_alpha=8, target_modules="all"),
                           adapter_name="voice1", autocast_adapter_dtype=False)
    model.add_adapter("voice2", RVCLoraConfig(r=4, lora_alpha=8, target_modules="all"), autocast_adapter_dtype=False)
    randomize_lora(model, scale=0.12)
    model.eval()
    assert {param.dtype for param in model.parameters()} == {dtype}
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert sum(isinstance(layer, LoraConvTranspose1d) for layer in layers.values()) == 4  # the upsampling layers
    assert any(isinstance(layer, LoraConv1d) and layer.get_base_layer().dilation[0] > 1 for layer in layers.values())
    inputs = {key: value.to(dtype) if value.is_floating_point() else value
              for key, value in random_inputs(config, frames=16, batch=3).items()}

    def audio_and_z() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)  # the prior and NSF noise are random: same draw for every run
        with torch.no_grad():
            audio, _, (z, *_) = model.infer(**inputs)
        return audio, z

    original_weights = {name: layer.get_base_layer().weight.detach().clone() for name, layer in layers.items()}
    deltas = {name: layer.get_delta_weight("voice1").detach() for name, layer in layers.items()}
    eps = torch.finfo(dtype).eps
    audio, z = audio_and_z()
    with model.disable_adapter():
        base_audio, _ = audio_and_z()
    model.merge_adapter()
    merged_audio, merged_z = audio_and_z()
    model.unmerge_adapter()
    assert merged_audio.dtype == dtype
    audio_tolerance = 16 * eps * audio.abs().max().item()
    assert (merged_audio - audio).abs().max().item() <= audio_tolerance
    assert (merged_z - z).abs().max().item() <= 16 * eps * z.abs().max().item()
    assert (audio - base_audio).abs().max().item() > 2 * audio_tolerance  # the adapter matters beyond the tolerance
    for name, layer in layers.items():
        restored = layer.get_base_layer().weight.detach()
        bound = ULPS_OF_MAX * eps * (original_weights[name].abs().max() + deltas[name].abs().max()).item()
        assert restored.dtype == dtype, name
        assert (restored.double() - original_weights[name].double()).abs().max().item() <= bound, name

    routing = ["voice1", "__base__", "voice2"]
    with model.base_model._enable_peft_forward_hooks(adapter_names=routing):  # how rvc_peft's voices route rows
        mixed_audio, _ = audio_and_z()
    model.set_adapter("voice2")
    voice2_audio, _ = audio_and_z()
    per_row = torch.stack([audio[0], base_audio[1], voice2_audio[2]])
    assert (mixed_audio - per_row).abs().max().item() <= 8 * eps * per_row.abs().max().item()
