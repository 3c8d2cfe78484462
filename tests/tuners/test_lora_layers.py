"""rvc_peft's Conv1d / ConvTranspose1d LoRA layers: exact forward, merge, unmerge, weight norm, mixed batches."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import rvc_peft.tuners  # noqa: F401  (registers the tuner)
from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import LoraConv1d, LoraConvTranspose1d, RVCLoraConfig
from tests.tuners.toy_models import (
    ALL_TARGETS,
    CONV_TARGETS,
    WEIGHT_NORM_KINDS,
    RVCStyleToyConvNet,
    ToyConvNet,
    toy_inputs,
)


class _RVCStyleHolder(nn.Sequential):
    """A one-layer model declared an RVC network, so grouped convs get rvc_peft's layer (the one tested here)."""

    rvc_peft_rvc_network = True


def _wrap(layer: nn.Module, r: int = 4, **config) -> nn.Module:
    holder = _RVCStyleHolder(OrderedDict(layer=layer))
    model = get_peft_model(holder, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["layer"], **config))
    randomize_lora(model)
    return model.base_model.model.layer


def _branch_reference(lora_layer: nn.Module, x: torch.Tensor, adapter: str = "default", **conv_kwargs) -> torch.Tensor:
    """B(A(x))·scaling rebuilt from stock torch modules holding the layer's LoRA weights (independent of the layer)."""
    base = lora_layer.get_base_layer()
    A, B = lora_layer.lora_A[adapter], lora_layer.lora_B[adapter]
    g, r = base.groups, lora_layer.r[adapter]
    if isinstance(base, nn.ConvTranspose1d):
        a_module = nn.ConvTranspose1d(base.in_channels, r, base.kernel_size, base.stride, base.padding,
                                      base.output_padding, g, False, base.dilation).double()
        # rank-first storage (r, in/g, k) -> torch's transposed layout (in, r/g, k), group by group
        a_weight = torch.cat([A.weight[i * r // g:(i + 1) * r // g].transpose(0, 1) for i in range(g)], dim=0)
    else:
        a_module = nn.Conv1d(base.in_channels, r, base.kernel_size, base.stride, base.padding, base.dilation, g, False,
                             base.padding_mode).double()
        a_weight = A.weight
    b_module = nn.Conv1d(r, base.out_channels, 1, groups=g, bias=False).double()
    with torch.no_grad():
        a_module.weight.copy_(a_weight)
        b_module.weight.copy_(B.weight)
        hidden = a_module(x, **conv_kwargs) if conv_kwargs else a_module(x)
        return b_module(hidden) * lora_layer.scaling[adapter]


TRANSPOSED = [
    {"in_channels": 8, "out_channels": 6, "kernel_size": 16, "stride": 8, "padding": 4},
    {"in_channels": 6, "out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1},
    {"in_channels": 4, "out_channels": 6, "kernel_size": 4, "stride": 2, "padding": 1, "groups": 2},
    {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 2, "dilation": 3, "output_padding": 1},
]
CONVS = [
    {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "dilation": 3, "padding": 3},
    {"in_channels": 8, "out_channels": 8, "kernel_size": 5, "dilation": 5, "padding": 10},
    {"in_channels": 8, "out_channels": 6, "kernel_size": 5, "padding": 2, "padding_mode": "reflect"},
    {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": 1, "groups": 2},
    {"in_channels": 4, "out_channels": 4, "kernel_size": 4, "stride": 2, "padding": 1, "groups": 2, "padding_mode": "replicate"},
]


@pytest.mark.parametrize("norm", ["none", "parametrized"])
@pytest.mark.parametrize("geometry", TRANSPOSED)
def test_conv_transpose_lora_is_exact(geometry: dict, norm: str) -> None:
    layer = nn.ConvTranspose1d(**geometry).double()
    layer = weight_norm(layer) if norm == "parametrized" else layer
    lora = _wrap(layer)
    assert isinstance(lora, LoraConvTranspose1d)
    groups, r = geometry.get("groups", 1), 4
    assert tuple(lora.lora_A["default"].weight.shape) == (r, geometry["in_channels"] // groups, geometry["kernel_size"])
    assert tuple(lora.lora_B["default"].weight.shape) == (geometry["out_channels"], r // groups, 1)
    x = torch.randn(2, geometry["in_channels"], 7, dtype=torch.float64)
    with torch.no_grad():
        out = lora(x)
        base_out = lora.get_base_layer()(x)
        delta = lora.get_delta_weight("default")
        merged_ref = F.conv_transpose1d(x, lora.get_base_layer().weight + delta, lora.get_base_layer().bias,
                                        layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
    torch.testing.assert_close(out - base_out, _branch_reference(lora, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(out, merged_ref, atol=1e-12, rtol=0)
    assert (out - base_out).abs().max() > 1e-3  # the adapter does something


def test_conv_transpose_output_size_sets_output_padding() -> None:
    lora = _wrap(nn.ConvTranspose1d(6, 4, 4, 2, 1).double())
    x = torch.randn(1, 6, 9, dtype=torch.float64)
    with torch.no_grad():
        out = lora(x, output_size=[19])  # 2·9 + 1: needs output_padding 1
        weight = lora.get_base_layer().weight + lora.get_delta_weight("default")
        ref = F.conv_transpose1d(x, weight, lora.get_base_layer().bias, 2, 1, 1)
    assert out.shape == (1, 4, 19)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(out - lora.get_base_layer()(x, [19]), _branch_reference(lora, x, output_size=[19]))


@pytest.mark.parametrize("norm", ["none", "parametrized"])
@pytest.mark.parametrize("geometry", CONVS)
def test_conv1d_lora_is_exact(geometry: dict, norm: str) -> None:
    layer = nn.Conv1d(**geometry).double()
    layer = weight_norm(layer) if norm == "parametrized" else layer
    lora = _wrap(layer, r=2)
    assert isinstance(lora, LoraConv1d)
    x = torch.randn(2, geometry["in_channels"], 23, dtype=torch.float64)
    with torch.no_grad():
        out = lora(x)
        base = lora.get_base_layer()
        merged_ref = nn.Conv1d(**geometry).double()
        merged_ref.weight.copy_(base.weight + lora.get_delta_weight("default"))
        merged_ref.bias.copy_(base.bias)
        ref = merged_ref(x)
    torch.testing.assert_close(out - base(x), _branch_reference(lora, x), atol=1e-12, rtol=0)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", WEIGHT_NORM_KINDS)
def test_merge_unmerge_keep_weight_norm(kind: str) -> None:
    model = RVCStyleToyConvNet(kind).double()
    x, speaker = toy_inputs()
    x = x.double()
    with torch.no_grad():
        base_out = model(x, speaker)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=ALL_TARGETS))
    randomize_lora(peft_model)
    with torch.no_grad():
        unmerged = peft_model(x, speaker)
        peft_model.merge_adapter()
        merged = peft_model(x, speaker)
        peft_model.unmerge_adapter()
        restored = peft_model(x, speaker)
    assert (unmerged - base_out).abs().max() > 0.1
    torch.testing.assert_close(merged, unmerged, atol=1e-10, rtol=0)
    torch.testing.assert_close(restored, unmerged, atol=1e-10, rtol=0)
    plain = peft_model.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(plain(x, speaker), unmerged, atol=1e-10, rtol=0)
    for name in CONV_TARGETS:
        module = getattr(plain, name)
        if kind == "parametrized":
            assert parametrize.is_parametrized(module, "weight"), name
        elif kind == "legacy":
            assert hasattr(module, "weight_g") and hasattr(module, "weight_v"), name


@pytest.mark.parametrize("norm", ["none", "parametrized"])
def test_rvc_size_merge_is_within_1e5_fp32(norm: str) -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose1d(512, 256, 16, 8, 4)
    res = nn.Conv1d(256, 256, 11, dilation=5, padding=25)
    if norm == "parametrized":
        up, res = weight_norm(up), weight_norm(res)
    model = nn.Sequential(OrderedDict(up=up, act=nn.LeakyReLU(0.1), res=res))
    # not an RVC network: RVCLoraConfig opts in to rvc_peft's layer for the dilated conv (plain LoraConfig: stock PEFT)
    peft_model = get_peft_model(model, RVCLoraConfig(r=8, lora_alpha=16, target_modules=["up", "res"]))
    randomize_lora(peft_model, scale=0.05)
    x = torch.randn(1, 512, 50)
    with torch.no_grad():
        unmerged = peft_model(x)
        peft_model.merge_adapter()
        merged = peft_model(x)
        peft_model.unmerge_adapter()
        restored = peft_model(x)
    assert (merged - unmerged).abs().max() <= 1e-5
    assert (restored - unmerged).abs().max() <= 1e-5


def test_mixed_batch_adapter_names() -> None:
    model = RVCStyleToyConvNet("parametrized").double()
    x, speaker = toy_inputs(batch=3)
    x = x.double()
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=ALL_TARGETS))
    peft_model.add_adapter("other", LoraConfig(r=2, lora_alpha=2, target_modules=ALL_TARGETS))
    randomize_lora(peft_model)
    peft_model.eval()
    with torch.no_grad():
        mixed = peft_model(x, speaker, adapter_names=["default", "other", "__base__"])
        outputs = {}
        for name in ("default", "other"):
            peft_model.set_adapter(name)
            outputs[name] = peft_model(x, speaker)
        with peft_model.disable_adapter():
            outputs["__base__"] = peft_model(x, speaker)
    for row, name in enumerate(["default", "other", "__base__"]):
        torch.testing.assert_close(mixed[row], outputs[name][row], atol=1e-12, rtol=0)


def test_dora_on_transposed_conv_is_refused() -> None:
    with pytest.raises(ValueError, match=r"DoRA \(use_dora=True\) is not supported for the ConvTranspose1d layer 'up1'"):
        get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["up1"], use_dora=True))


def test_rank_must_divide_groups() -> None:
    with pytest.raises(ValueError, match=r"groups=2 and rank 3 .*'gup'.*divisible by groups"):
        get_peft_model(ToyConvNet(), LoraConfig(r=3, target_modules=["gup"]))


def test_unsupported_init_is_refused() -> None:
    with pytest.raises(ValueError, match=r"init_lora_weights='pissa' is not supported for the ConvTranspose1d"):
        get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["up1"], init_lora_weights="pissa"))


def test_safe_merge_detects_nan() -> None:
    peft_model = get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["up1"]))
    with torch.no_grad():
        peft_model.base_model.model.up1.lora_B["default"].weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaNs detected in the merged weights. The adapter default"):
        peft_model.merge_adapter(safe_merge=True)
    assert torch.isfinite(peft_model.base_model.model.up1.get_base_layer().weight).all()  # nothing was written


def test_new_adapter_is_identity_and_trainable() -> None:
    model = RVCStyleToyConvNet("parametrized")
    x, speaker = toy_inputs()
    with torch.no_grad():
        base_out = model(x, speaker)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=ALL_TARGETS))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x, speaker), base_out)  # B starts at zero
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name for name in trainable)
    peft_model(x, speaker).square().mean().backward()
    assert peft_model.base_model.model.up1.lora_B["default"].weight.grad.abs().sum() > 0
