"""Registration in PEFT: non-RVC models keep stock behaviour, and the PEFT internals we rely on are pinned."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_MIXED_MODEL_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners import lora as peft_lora
from peft.tuners.lora import layer as peft_lora_layer
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import PeftType

import rvc_peft.tuners
from rvc_peft.testing import randomize_lora
from rvc_peft.tuners import RVCLoraConfig, RVCLoraModel, is_registered, register, stock_peft, unregister
from tests.tuners.toy_models import ALL_TARGETS, LinearOnly, ToyConvNet, toy_inputs

# PEFT's own grouped-conv layer (what non-RVC models keep) warns on creation; expected here
pytestmark = pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd layer with groups > 1:UserWarning")


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
    assert is_registered()
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
    assert type(ours.base_model) is peft_lora.LoraModel  # not an RVC network, no ConvTranspose1d: PEFT's own tuner
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
    # dilated and reflect-padded: PEFT's layer, as stock PEFT does (its forward is wrong there; RVCLoraConfig opts in
    # to ours, see test_grouped_conv1d_rule_depends_on_the_model)
    assert type(inner.dil3) is peft_lora_layer.Conv1d and type(inner.reflect) is peft_lora_layer.Conv1d
    # grouped, not an RVC network: PEFT's layer and parameter layout (its merge refuses loudly, its adapters load)
    assert type(inner.gconv) is peft_lora_layer.Conv1d
    assert tuple(inner.gconv.lora_A["default"].weight.shape) == (2, 4, 3)  # stock (r, in, k), not ours (r, in/g, k)
    assert type(inner.up1) is rvc_peft.tuners.LoraConvTranspose1d
    assert type(inner.gup) is rvc_peft.tuners.LoraConvTranspose1d  # PEFT has no transposed-conv layer at all


def _conv_variants(weight_norm: bool = False) -> torch.nn.Module:
    def conv(**kwargs) -> torch.nn.Conv1d:
        layer = torch.nn.Conv1d(4, 4, 3, padding=1, **kwargs)
        return torch.nn.utils.parametrizations.weight_norm(layer) if weight_norm else layer

    return torch.nn.ModuleDict({
        "plain": conv(), "grouped": conv(groups=2), "grouped_dilated": conv(groups=2, dilation=2),
        "grouped_reflect": conv(groups=2, padding_mode="reflect"),
    })


class _RVCStyle(torch.nn.Module):
    rvc_peft_rvc_network = True

    def __init__(self, weight_norm: bool) -> None:
        super().__init__()
        self.convs = _conv_variants(weight_norm)


class _Plain(torch.nn.Module):
    def __init__(self, weight_norm: bool) -> None:
        super().__init__()
        self.convs = _conv_variants(weight_norm)


@pytest.mark.parametrize("weight_norm", [False, True])
@pytest.mark.parametrize("config_cls", [LoraConfig, RVCLoraConfig])
def test_grouped_conv1d_rule_depends_on_the_model(weight_norm: bool, config_cls: type) -> None:
    """On RVC networks our layer replaces PEFT's wherever PEFT's is broken (dilation, padding mode), cannot merge
    (groups) or loses merges (weight norm). Elsewhere a plain LoraConfig gets stock PEFT everywhere, while an
    RVCLoraConfig opts in to ours where PEFT's is broken or loses merges (grouped convs keep PEFT's layout)."""
    ours, stock = rvc_peft.tuners.LoraConv1d, peft_lora_layer.Conv1d
    expected = {
        "plain": ours if weight_norm else stock, "grouped": stock, "grouped_dilated": ours, "grouped_reflect": ours,
    }
    stock_everywhere = dict.fromkeys(expected, stock)
    for model_cls, grouped in ((_Plain, stock), (_RVCStyle, ours)):
        model = get_peft_model(model_cls(weight_norm), config_cls(r=2, target_modules=r"convs\.\w+"))
        layers = model.base_model.model.convs
        wanted = stock_everywhere if (model_cls is _Plain and config_cls is LoraConfig) else {**expected, "grouped": grouped}
        assert {name: type(layer) for name, layer in layers.items()} == wanted, model_cls
        in_per_rank = 4 if grouped is stock else 2  # lora_A: stock (r, in, k), ours (r, in/g, k)
        assert tuple(layers["grouped"].lora_A["default"].weight.shape) == (2, in_per_rank, 3)


def test_rvc_discriminators_get_our_grouped_layer() -> None:
    from peft import inject_adapter_in_model

    from rvc_peft.models.discriminators import DiscriminatorS, MultiPeriodDiscriminator

    scale = get_peft_model(DiscriminatorS(), LoraConfig(r=4, target_modules=["convs.0", "convs.1"]))
    assert type(scale.base_model.model.convs[1]) is rvc_peft.tuners.LoraConv1d  # 16 -> 64, groups=4
    assert type(scale.base_model.model.convs[0]) is rvc_peft.tuners.LoraConv1d  # weight-normed, ungrouped
    mpd = inject_adapter_in_model(RVCLoraConfig(r=4, target_modules=["discriminators.0.convs.1"]),
                                  MultiPeriodDiscriminator("v1"))
    layer = mpd.discriminators[0].convs[1]
    assert type(layer) is rvc_peft.tuners.LoraConv1d and tuple(layer.lora_A["default"].weight.shape) == (4, 4, 41)


def test_stock_peft_adapter_on_a_grouped_conv_of_a_non_rvc_model_loads_unchanged(tmp_path) -> None:
    """An adapter made with stock PEFT on transformers HuBERT's grouped, weight-normed pos_conv_embed loads after
    registration into PEFT's own layer and computes exactly what stock PEFT computes."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                          num_conv_pos_embedding_groups=4)

    def hubert() -> HubertModel:
        torch.manual_seed(0)
        return HubertModel(config).eval()

    wav = torch.randn(2, 400, generator=torch.Generator().manual_seed(1))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["pos_conv_embed.conv", "q_proj"])
    with stock_peft():
        stock = get_peft_model(hubert(), lora)
        randomize_lora(stock)
        with torch.no_grad():
            expected = stock(wav).last_hidden_state
        stock.save_pretrained(tmp_path)
        with pytest.raises(NotImplementedError, match="groups > 1"):
            stock.merge_adapter()
    assert is_registered()
    with pytest.warns(UserWarning, match=r"groups > 1\. Merging is not supported"):  # PEFT's own layer says so
        loaded = PeftModel.from_pretrained(hubert(), str(tmp_path))
    assert type(loaded.base_model) is peft_lora.LoraModel  # not an RVC network: PEFT's own tuner
    conv = loaded.base_model.model.encoder.pos_conv_embed.conv
    assert type(conv) is peft_lora_layer.Conv1d and tuple(conv.lora_A["default"].weight.shape) == (4, 16, 8)
    with torch.no_grad():
        assert torch.equal(loaded(wav).last_hidden_state, expected)
    assert (expected - hubert()(wav).last_hidden_state).abs().max() > 1e-2  # the adapter does something
    with pytest.raises(NotImplementedError, match="groups > 1"):  # as loud as stock PEFT, never silently wrong
        loaded.merge_adapter()


def test_stock_peft_fails_where_we_work() -> None:
    """Documents why the override exists (if PEFT starts supporting these, the override can shrink)."""
    with stock_peft():
        with pytest.raises(ValueError, match=r"Target module .*ConvTranspose1d.* is not supported"):
            get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["up1"]))
        model = get_peft_model(ToyConvNet(), LoraConfig(r=2, target_modules=["dil3"], init_lora_weights=False))
        with pytest.raises(RuntimeError):
            model(*toy_inputs())


def test_private_peft_apis_are_still_there() -> None:
    """Fails with one line per changed internal (what, where we use it, why) when a PEFT release moves one."""
    from rvc_peft.tuners.peft_internals import PRIVATE_APIS, check_peft_internals

    assert len(PRIVATE_APIS) >= 10 and all(api.reason and api.used_in for api in PRIVATE_APIS)
    problems = check_peft_internals()
    assert not problems, "\n".join(problems)


def test_the_internals_check_reports_a_changed_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is real: hide one internal and it names it, with where and why it is used."""
    from rvc_peft.tuners.peft_internals import check_peft_internals

    monkeypatch.delattr(BaseTuner, "_remap_adapter_state_dict_for_load")
    problems = check_peft_internals()
    assert len(problems) == 1
    assert "BaseTuner._remap_adapter_state_dict_for_load" in problems[0] and "AttributeError" in problems[0]
    assert "rvc_peft/tuners/lora/model.py" in problems[0] and "refused there" in problems[0]


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


def test_peft_model_push_to_hub_is_not_patched() -> None:
    """PeftModel.push_to_hub stays transformers' own; the RVC card goes up with rvc_peft.push_adapter_to_hub."""
    from transformers.utils.hub import PushToHubMixin

    assert "push_to_hub" not in PeftModel.__dict__
    assert PeftModel.push_to_hub is PushToHubMixin.push_to_hub
