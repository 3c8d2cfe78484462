"""After `import rvc_peft`, stock PEFT's behaviour on non-RVC models is untouched.

Each model is adapted twice in this process — through the registered tuner entry and inside `stock_peft()` (PEFT's
own entry) — and everything observable must be identical: the tuner and layer classes, the parameters, the outputs
(unmerged, in a mixed batch and merged), and the saved adapter files.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners import lora as peft_lora
from torch import nn

from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import stock_peft

pytestmark = pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd layer with groups > 1:UserWarning")


class DilatedConvNet(nn.Module):
    """A WaveNet-style stack of dilated Conv1d layers. forward(x [B, 4, T]) -> [B, 4, T]."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv1d(4, 8, 1)
        self.dilated = nn.ModuleList(nn.Conv1d(8, 8, 3, dilation=d, padding=d) for d in (1, 2, 4))
        self.out = nn.Conv1d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for conv in self.dilated:
            h = h + torch.tanh(conv(h))
        return self.out(h)


class GroupedConvNet(nn.Module):
    """Grouped Conv1d layers (weight-normed, like a positional conv). [B, 8, T] -> [B, 8, T]."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 8, 5, padding=2, groups=2), dim=2)
        self.depthwise = nn.Conv1d(8, 8, 3, padding=1, groups=2)
        self.pointwise = nn.Conv1d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(torch.relu(self.depthwise(self.grouped(x))))


class MLP(nn.Module):
    """Linear layers only. [B, 6] -> [B, 6]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _hubert() -> nn.Module:
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                          num_conv_pos_embedding_groups=4)
    return HubertModel(config)


CASES: dict[str, tuple[Callable[[], nn.Module], list[str], Callable[[], torch.Tensor], bool]] = {
    # name: (model factory, targets, input factory, whether stock PEFT can merge it)
    "mlp": (MLP, ["a", "b"], lambda: torch.randn(3, 6), True),
    "dilated_conv1d": (DilatedConvNet, ["inp", "dilated.0", "out"], lambda: torch.randn(2, 4, 20), True),
    "grouped_conv1d": (GroupedConvNet, ["grouped", "depthwise", "pointwise"], lambda: torch.randn(2, 8, 20), False),
    "hubert": (_hubert, ["q_proj", "v_proj", "pos_conv_embed.conv"], lambda: torch.randn(2, 400), False),
}


def _build(factory: Callable[[], nn.Module], targets: list[str]) -> PeftModel:
    torch.manual_seed(0)
    model = factory().eval()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    peft_model.add_adapter("other", LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    torch.manual_seed(1)
    randomize_lora(peft_model)
    return peft_model.eval()


def _run(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = model(x, **kwargs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


@pytest.mark.parametrize("case", list(CASES))
def test_non_rvc_model_gets_exactly_stock_peft(case: str, tmp_path) -> None:
    factory, targets, inputs, mergeable = CASES[case]
    x = inputs()
    ours = _build(factory, targets)
    with stock_peft():
        stock = _build(factory, targets)
    assert type(ours.base_model) is type(stock.base_model) is peft_lora.LoraModel
    # class names: weight-normed layers get a dynamically created class per instance
    assert {n: type(m).__qualname__ for n, m in ours.named_modules()} == {
        n: type(m).__qualname__ for n, m in stock.named_modules()
    }
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert list(ours_state) == list(stock_state)
    assert all(torch.equal(ours_state[k], stock_state[k]) for k in ours_state)
    assert torch.equal(_run(ours, x), _run(stock, x))
    if case != "dilated_conv1d":  # stock PEFT's dilated LoRA changes the length: the same RuntimeError for both
        mixed = ["default", "other"] * (x.shape[0] // 2) + ["__base__"] * (x.shape[0] % 2)
        assert torch.equal(_run(ours, x, adapter_names=mixed), _run(stock, x, adapter_names=mixed))
    ours.save_pretrained(tmp_path / "ours")
    with stock_peft():
        stock.save_pretrained(tmp_path / "stock")
    for name in ("adapter_config.json", "other/adapter_config.json"):
        assert json.loads((tmp_path / "ours" / name).read_text()) == json.loads((tmp_path / "stock" / name).read_text())
    assert sorted(p.name for p in (tmp_path / "ours").rglob("*")) == sorted(p.name for p in (tmp_path / "stock").rglob("*"))
    if mergeable:
        ours.merge_adapter(["default"])
        with stock_peft():
            stock.merge_adapter(["default"])
        assert torch.equal(_run(ours, x), _run(stock, x))
    else:  # stock PEFT refuses to merge grouped convs: so does the registered entry
        with pytest.raises(NotImplementedError, match="groups > 1"):
            ours.merge_adapter(["default"])


def test_dilated_conv1d_keeps_stock_peft_failure_and_rvc_config_opts_in() -> None:
    """Stock PEFT's LoRA on a dilated conv breaks the forward; after import rvc_peft a plain LoraConfig still does
    (stock behaviour), while an RVCLoraConfig gets rvc_peft's exact layer."""
    from rvc_peft.tuners import LoraConv1d, RVCLoraConfig

    x = torch.randn(2, 4, 20)
    plain = get_peft_model(DilatedConvNet(), LoraConfig(r=2, target_modules=["dilated.2"], init_lora_weights=False))
    with pytest.raises(RuntimeError):
        plain(x)
    torch.manual_seed(0)
    base = DilatedConvNet()
    opted = get_peft_model(base, RVCLoraConfig(r=2, target_modules=["dilated.2"]))
    assert isinstance(opted.base_model.model.dilated[2], LoraConv1d)
    randomize_lora(opted)
    unmerged = _run(opted, x)
    opted.merge_adapter()
    torch.testing.assert_close(_run(opted, x), unmerged, atol=1e-5, rtol=0)


def test_tuners_survive_deepcopy_on_both_paths() -> None:
    """copy.deepcopy rebuilds a tuner through `__new__` without arguments: both entry paths must allow it."""
    import copy

    from rvc_peft.testing import random_synthesizer, small_config
    from rvc_peft.tuners import RVCLoraModel

    original = get_peft_model(MLP(), LoraConfig(r=2, target_modules=["a"])).eval()
    randomize_lora(original)
    stock = copy.deepcopy(original)
    rvc = copy.deepcopy(get_peft_model(random_synthesizer(small_config()), LoraConfig(r=2)))
    assert type(stock.base_model) is peft_lora.LoraModel and type(rvc.base_model) is RVCLoraModel
    x = torch.randn(2, 6)
    assert torch.equal(_run(stock, x), _run(original, x))
