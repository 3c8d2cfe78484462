"""Exactness of `add_weighted_adapter` on 1-D conv LoRA layers, against deltas computed independently in float64.

PEFT's convention (peft/tuners/lora/model.py, `_svd_generalized_task_arithmetic_weighted_adapter` and the "cat"
branch of `add_weighted_adapter`): the blend of adapters a, b with weights wa, wb has ΔW = wa·ΔW_a + wb·ΔW_b, where
ΔW_x already includes x's scaling (alpha/r, or alpha/√r with rslora). The new adapter copies the first adapter's
config with r = lora_alpha = the new rank, so its own scaling is 1 — or √r when the first adapter uses rslora, which
the factors must compensate. "svd" keeps the best rank-r approximation (Eckart–Young); rvc_peft truncates each
group's `(out/g) × (in/g·k)` matrix to r/g.

The layers are float32 (the dtype blends are made in); tolerances are float32 round-off of the compared values.
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Conv1d as PeftConv1d
from peft.tuners.lora.layer import LoraLayer
from torch import nn

import rvc_peft.tuners  # noqa: F401  (registers the tuner)
from rvc_peft.testing import randomize_lora
from tests.tuners.lora_reference import (
    LAYERS,
    SCALES,
    adapted_layer,
    reference_base,
    reference_branch,
    reference_delta,
    wrap_layer,
)

WEIGHTS = {"voice1": 0.7, "voice2": -0.4}
FULL_RANK = 6  # voice1 (r=4) + voice2 (r=2): the blend's rank, per group (r/g) too
# the blend's rank-first order decides which config it copies: voice2 first gives an rslora blend (scaling √r)
ORDERS = [pytest.param(["voice1", "voice2"], id="plain-first"), pytest.param(["voice2", "voice1"], id="rslora-first")]
BLEND_LAYERS = [*LAYERS, "peft_conv_plain"]  # + a plain Conv1d left to PEFT's own layer (the SVD is rvc_peft's)


def _float32_layer(name: str) -> tuple[nn.Module, LoraLayer]:
    if name != "peft_conv_plain":
        return adapted_layer(name, torch.float32)
    torch.manual_seed(0)
    configs = {"voice1": LoraConfig(r=4, lora_alpha=8), "voice2": LoraConfig(r=2, lora_alpha=6, use_rslora=True)}
    model, layer = wrap_layer(nn.Conv1d(8, 6, 5, padding=2), configs)
    assert type(layer) is PeftConv1d
    randomize_lora(model, scale=0.2)
    return model.eval(), layer


def _weighted_sum(layer: LoraLayer, adapters: list[str]) -> torch.Tensor:
    """wa·ΔW_a + wb·ΔW_b in float64 from the adapters' raw factors and their configured scalings."""
    return sum(WEIGHTS[adapter] * reference_delta(layer, adapter, SCALES[adapter]) for adapter in adapters)


def _group_matrices(layer: LoraLayer, delta: torch.Tensor) -> list[torch.Tensor]:
    """Each group's block of ΔW as an (out/g) × (in/g·k) matrix (what "svd" truncates)."""
    base = layer.get_base_layer()
    groups = base.groups
    rows_per_group = delta.shape[0] // groups
    blocks = [delta[g * rows_per_group:(g + 1) * rows_per_group] for g in range(groups)]
    if isinstance(base, nn.ConvTranspose1d):  # (in/g, out/g, k) -> (out/g, in/g, k)
        blocks = [block.transpose(0, 1) for block in blocks]
    return [block.reshape(block.shape[0], -1) for block in blocks]


def _from_group_matrices(layer: LoraLayer, matrices: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Inverse of `_group_matrices`: the per-group matrices back in the base weight's layout (shape of `like`)."""
    base = layer.get_base_layer()
    kernel = like.shape[-1]
    blocks = [matrix.reshape(matrix.shape[0], -1, kernel) for matrix in matrices]
    if isinstance(base, nn.ConvTranspose1d):
        blocks = [block.transpose(0, 1) for block in blocks]
    return torch.cat(blocks).reshape(like.shape)


def _best_rank_approximation(layer: LoraLayer, delta: torch.Tensor, rank: int) -> torch.Tensor:
    """Each group's matrix truncated to its best rank-(rank/g) approximation, in float64."""
    groups = layer.get_base_layer().groups
    truncated = []
    for matrix in _group_matrices(layer, delta):
        U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
        kept = rank // groups
        # a clear gap after the kept singular values: the best approximation is unique, so comparable element-wise
        assert S[kept - 1] - S[kept] > 1e-2 * S[0]
        truncated.append(U[:, :kept] * S[:kept] @ Vh[:kept])
    return _from_group_matrices(layer, truncated, delta)


def _assert_float32_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Element-wise within 1e-5 of max|expected| (float32 eps is 1.2e-7; SVD and sums lose a few digits)."""
    tolerance = 1e-5 * expected.abs().max().item()
    error = (actual.double() - expected).abs().max().item()
    assert error <= tolerance, f"{what}: max error {error:.3g} > {tolerance:.3g}"


def _check_blend(model: nn.Module, layer: LoraLayer, blend: str, expected_delta: torch.Tensor) -> None:
    """The blend's delta weight and its forward (base + B∘A, rebuilt independently) both equal `expected_delta`."""
    _assert_float32_close(layer.get_delta_weight(blend), expected_delta, f"{blend}: delta weight")
    # the forward as well: checks the factors together with the scaling the blend's own config gives it
    blend_scale = layer.lora_alpha[blend] / (layer.r[blend] ** 0.5 if layer.use_rslora[blend] else layer.r[blend])
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, layer.get_base_layer().in_channels, 10, generator=generator)
    model.set_adapter(blend)
    with torch.no_grad():
        output = model(x)
        expected = reference_base(layer, x, layer.get_base_layer().weight.detach().double() + expected_delta)
    _assert_float32_close(output, expected, f"{blend}: forward")
    _assert_float32_close(reference_branch(layer, x, blend, blend_scale), expected - reference_base(layer, x),
                          f"{blend}: factors")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", BLEND_LAYERS)
def test_full_rank_svd_equals_the_weighted_sum(name: str, order: list[str]) -> None:
    model, layer = _float32_layer(name)
    model.add_weighted_adapter(order, [WEIGHTS[a] for a in order], "blend", combination_type="svd",
                               svd_rank=FULL_RANK)
    assert layer.r["blend"] == FULL_RANK
    _check_blend(model, layer, "blend", _weighted_sum(layer, order))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", BLEND_LAYERS)
def test_low_rank_svd_is_the_best_approximation_per_group(name: str, order: list[str]) -> None:
    model, layer = _float32_layer(name)
    model.add_weighted_adapter(order, [WEIGHTS[a] for a in order], "blend", combination_type="svd", svd_rank=2)
    expected = _best_rank_approximation(layer, _weighted_sum(layer, order), rank=2)
    _check_blend(model, layer, "blend", expected)
    # and it really is a truncation: the full weighted sum is measurably different
    assert (expected - _weighted_sum(layer, order)).abs().max() > 1e-2 * expected.abs().max()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", BLEND_LAYERS)
def test_cat_equals_the_weighted_sum(name: str, order: list[str]) -> None:
    # with an rslora first adapter the blend's own scaling is √6: it must be divided out on ungrouped layers too
    model, layer = _float32_layer(name)
    model.add_weighted_adapter(order, [WEIGHTS[a] for a in order], "blend", combination_type="cat")
    assert layer.r["blend"] == FULL_RANK  # ranks add up
    _check_blend(model, layer, "blend", _weighted_sum(layer, order))


@pytest.mark.filterwarnings("ignore:The density 1.0 is greater than or equal to 1")
@pytest.mark.parametrize("combination", ["magnitude_prune_svd", "dare_linear_svd"])
@pytest.mark.parametrize("name", ["conv_grouped", "convT_grouped", "convT_plain"])
def test_svd_variants_without_pruning_equal_svd(name: str, combination: str) -> None:
    """density=1 prunes nothing (and DARE rescales by 1/density = 1): the same ΔW as plain "svd"."""
    model, layer = _float32_layer(name)
    order = ["voice1", "voice2"]
    model.add_weighted_adapter(order, [WEIGHTS[a] for a in order], "blend", combination_type=combination,
                               svd_rank=FULL_RANK, density=1.0)
    _check_blend(model, layer, "blend", _weighted_sum(layer, order))


@pytest.mark.parametrize("combination", ["svd", "cat"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")])
@pytest.mark.parametrize("name", ["conv_dilated", "conv_grouped", "conv_weight_norm", "convT_plain", "convT_grouped"])
def test_half_precision_blends(name: str, dtype: torch.dtype, combination: str) -> None:
    """Blending half-precision adapters: the blend stays in the adapters' dtype, and its ΔW is the weighted sum up to
    the rounding of its own factors (measured ≤ 1.3 eps of max|ΔW|; the SVD itself runs in float32)."""
    model, layer = adapted_layer(name, dtype)
    order = ["voice1", "voice2"]
    extra = {"svd_rank": FULL_RANK} if combination == "svd" else {}
    model.add_weighted_adapter(order, [WEIGHTS[a] for a in order], "blend", combination_type=combination, **extra)
    assert layer.lora_A["blend"].weight.dtype == layer.lora_B["blend"].weight.dtype == dtype
    expected = _weighted_sum(layer, order)
    delta = layer.get_delta_weight("blend")
    assert delta.dtype == dtype
    tolerance = 4 * torch.finfo(dtype).eps * expected.abs().max().item()
    assert (delta.double() - expected).abs().max().item() <= tolerance
