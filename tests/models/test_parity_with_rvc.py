"""Same weights, same inputs, same audio as RVC's own model code (the `rvc` package's infer_pack).

RVC's classes are the independent reference: a state dict produced by RVC's code (legacy weight norm)
loads into ours with no missing/unexpected keys and both give the same output with noise switched off.
"""

from contextlib import contextmanager
from unittest import mock

import pytest
import torch

from rvc_peft.models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer, fold_weight_norm
from rvc_peft.testing import random_inputs, small_config

rvc_models = pytest.importorskip("rvc.lib.infer_pack.models", reason="RVC reference code (pip install --no-deps rvc)")

RVC_CLASSES = {
    ("v1", True): "SynthesizerTrnMs256NSFsid",
    ("v1", False): "SynthesizerTrnMs256NSFsid_nono",
    ("v2", True): "SynthesizerTrnMs768NSFsid",
    ("v2", False): "SynthesizerTrnMs768NSFsid_nono",
}
PRESETS = [("v1", 32000), ("v1", 40000), ("v1", 48000), ("v2", 32000), ("v2", 40000), ("v2", 48000)]


@contextmanager
def no_noise():
    """Zero every random draw (prior sampling, NSF noise, random slicing) in both implementations."""
    with mock.patch("torch.randn_like", lambda t, *a, **k: torch.zeros_like(t)), mock.patch(
        "torch.rand", lambda *size, **k: torch.zeros(*(size[0] if isinstance(size[0], (tuple, list)) else size))
    ):
        yield


def rvc_reference(config: RVCConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = getattr(rvc_models, RVC_CLASSES[(config.version, config.use_f0)])
    model = cls(*config.to_rvc_list(), is_half=False).eval()
    with torch.no_grad():  # the flow's output convs start at zero; randomise so the flow matters
        for name, param in model.named_parameters():
            if ".post." in name:
                param.normal_(0.0, 0.05)
    return model


def rvc_infer(model: torch.nn.Module, config: RVCConfig, x: dict) -> tuple:
    """RVC's own `infer`, positional as RVC's pipeline calls it (`x["rate"]`: the 2.x realtime cut, if given)."""
    extra = (x["rate"],) if "rate" in x else ()
    if config.use_f0:
        return model.infer(x["phone"], x["phone_lengths"], x["pitch"], x["nsff0"], x["sid"], *extra)
    return model.infer(x["phone"], x["phone_lengths"], x["sid"], *extra)


@pytest.mark.parametrize("version,sr", PRESETS)
@pytest.mark.parametrize("f0", [True, False])
def test_infer_matches_rvc(version: str, sr: int, f0: bool) -> None:
    config = small_config(version, f0, sr)
    reference = rvc_reference(config)
    ours = RVCSynthesizer(config).eval()
    result = ours.load_state_dict(reference.state_dict(), strict=True)  # legacy weight_g/weight_v names
    assert not result.missing_keys and not result.unexpected_keys
    x = random_inputs(config, frames=37)
    with torch.no_grad(), no_noise():
        expected = rvc_infer(reference, config, x)
        audio, _, (z, _, m_p, _) = ours.infer(**x)
    assert audio.shape == (1, 1, 37 * config.hop_length)
    torch.testing.assert_close(audio, expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(z, expected[2][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(m_p, expected[2][2], atol=1e-5, rtol=0)


def test_full_size_v2_40k_matches_rvc() -> None:
    config = RVCConfig.from_preset("40k", "v2", True)
    reference = rvc_reference(config)
    ours = RVCSynthesizer(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = random_inputs(config, frames=50, batch=2)
    x["phone_lengths"] = torch.tensor([50, 31])
    with torch.no_grad(), no_noise():
        expected = rvc_infer(reference, config, x)
        audio = ours.infer(**x)[0]
    torch.testing.assert_close(audio, expected[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("f0", [True, False])
def test_training_forward_matches_rvc(f0: bool) -> None:
    config = small_config("v2", f0, 40000)
    reference = rvc_reference(config)
    ours = RVCSynthesizer(config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    frames = 40
    x = random_inputs(config, frames=frames, batch=2)
    spec = torch.rand(2, config.spec_channels, frames)
    lengths = torch.tensor([frames, frames])
    args = (x["phone"], lengths)
    with torch.no_grad(), no_noise():
        if f0:
            expected = reference(*args, x["pitch"], x["nsff0"], spec, lengths, x["sid"])
            got = ours(*args, x["pitch"], x["nsff0"], spec, lengths, x["sid"])
        else:
            expected = reference(*args, spec, lengths, x["sid"])
            got = ours(*args, y=spec, y_lengths=lengths, ds=x["sid"])
    assert got[0].shape == (2, 1, config.train_segment_size)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=0)
    for a, b in zip(got[4], expected[4]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_discriminator_matches_rvc(version: str) -> None:
    torch.manual_seed(0)
    cls = rvc_models.MultiPeriodDiscriminator if version == "v1" else rvc_models.MultiPeriodDiscriminatorV2
    reference = cls(use_spectral_norm=False)
    ours = MultiPeriodDiscriminator(version)
    ours.load_state_dict(reference.state_dict(), strict=True)
    y, y_hat = torch.randn(2, 1, 3000), torch.randn(2, 1, 3000)
    with torch.no_grad():
        expected, got = reference(y, y_hat), ours(y, y_hat)
    for a, b in zip(got[0] + got[1], expected[0] + expected[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert len(got[2]) == len(expected[2])


@pytest.mark.parametrize("f0", [True, False])
def test_fold_weight_norm_is_exact(f0: bool) -> None:
    config = small_config("v2", f0, 48000)
    reference = rvc_reference(config)
    model = RVCSynthesizer(config).eval()
    model.load_state_dict(reference.state_dict())
    x = random_inputs(config, frames=30)
    with torch.no_grad(), no_noise():
        before = model.infer(**x)[0]
        fold_weight_norm(model)
        after = model.infer(**x)[0]
    names = [n for n, _ in model.named_parameters()]
    assert not any("parametrizations" in n or n.endswith(("weight_g", "weight_v")) for n in names)
    assert "dec.ups.0.weight" in names and "flow.flows.0.enc.in_layers.0.weight" in names
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    # RVC's own legacy weight norm folds the same way
    with torch.no_grad(), no_noise():
        expected = rvc_infer(reference, config, x)[0]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)


def test_fold_weight_norm_handles_legacy_hooks() -> None:
    conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 6, 3))
    x = torch.randn(1, 4, 20)
    before = conv(x)
    fold_weight_norm(conv)
    assert not hasattr(conv, "weight_g") and isinstance(conv.weight, torch.nn.Parameter)
    torch.testing.assert_close(conv(x), before, atol=1e-6, rtol=0)


def rvc_chunk(reference: torch.nn.Module, config: RVCConfig, x: dict, skip_head: int, length: int) -> tuple:
    """RVC 20240604's skip_head/return_length path, assembled from the installed RVC's own code.

    The installed RVC (2.x) has `infer(..., rate)`, which runs the flow on frames >= head only; with head =
    skip_head - 24 that is 20240604's `flow_head`, and 20240604 then keeps `return_length` frames from
    `dec_head = skip_head - flow_head` of the flow output and decodes them with the same decoder.
    """
    frames = x["phone"].shape[1]
    flow_head = max(skip_head - 24, 0)
    rate = torch.tensor(1 - (flow_head + 0.5) / frames)  # int(frames * (1 - rate)) == flow_head
    _, x_mask, (z, *_) = rvc_infer(reference, config, {**x, "rate": rate})
    assert z.shape[-1] == frames - flow_head
    dec_head = skip_head - flow_head
    z, x_mask = z[:, :, dec_head : dec_head + length], x_mask[:, :, dec_head : dec_head + length]
    g = reference.emb_g(x["sid"]).unsqueeze(-1)
    if config.use_f0:
        return reference.dec(z * x_mask, x["nsff0"][:, skip_head : skip_head + length], g=g), z
    return reference.dec(z * x_mask, g=g), z


@pytest.mark.parametrize("f0", [True, False])
def test_chunked_inference_matches_full_pass_and_rvc(f0: bool) -> None:
    """skip_head/return_length (RVC 20240604): prior from the full context, decode only the requested frames."""
    config = small_config("v2", f0, 40000)
    reference = rvc_reference(config)
    model = RVCSynthesizer(config).eval()
    model.load_state_dict(reference.state_dict())
    x = random_inputs(config, frames=80)
    with torch.no_grad(), no_noise():
        full = model.infer(**x)
        whole = model.infer(**x, skip_head=0, return_length=80)
        chunk = model.infer(**x, skip_head=40, return_length=30)
        as_tensors = model.infer(**x, skip_head=torch.tensor(40), return_length=torch.tensor(30))
        expected_audio, expected_z = rvc_chunk(reference, config, x, skip_head=40, length=30)
        m_full, _, _ = model.enc_p(x["phone"], x.get("pitch"), x["phone_lengths"])
        m_skip, _, mask_skip = model.enc_p(x["phone"], x.get("pitch"), x["phone_lengths"], skip_head=16)
        resampled = model.infer(**x, return_length2=60)
    torch.testing.assert_close(whole[0], full[0], atol=1e-6, rtol=0)
    assert chunk[0].shape == (1, 1, 30 * config.hop_length) and chunk[1].shape == (1, 1, 30)
    # The flow's receptive field is 24 frames each side (4 couplings x 3 layers of kernel 5), exactly the left
    # context kept, so the chunk's latent is the full pass's latent for those frames (bit-equal in practice).
    torch.testing.assert_close(chunk[2][0], full[2][0][:, :, 40:70], atol=1e-6, rtol=0)
    torch.testing.assert_close(chunk[2][0], expected_z, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunk[0], expected_audio, atol=1e-5, rtol=0)
    torch.testing.assert_close(as_tensors[0], chunk[0], atol=0, rtol=0)
    torch.testing.assert_close(m_skip, m_full[:, :, 16:], atol=1e-6, rtol=0)
    assert mask_skip.shape[-1] == 64
    assert resampled[0].shape == (1, 1, 60 * config.hop_length)


def test_no_pitch_model_takes_rvc_positional_forms() -> None:
    """RVC 20240604's `_nono.infer(phone, phone_lengths, sid, skip_head, return_length, return_length2)`."""
    config = small_config("v1", False, 40000, spk_embed_dim=3)
    reference = rvc_reference(config)
    model = RVCSynthesizer(config).eval()
    model.load_state_dict(reference.state_dict())
    x = random_inputs(config, frames=80)
    x["sid"] = torch.tensor([2])
    phone, lengths, sid = x["phone"], x["phone_lengths"], x["sid"]
    head, length = torch.tensor(40), torch.tensor(30)
    with torch.no_grad(), no_noise():
        expected_full = reference.infer(phone, lengths, sid)[0]
        expected_chunk = rvc_chunk(reference, config, x, skip_head=40, length=30)[0]
        torch.testing.assert_close(model.infer(phone, lengths, sid)[0], expected_full, atol=1e-5, rtol=0)
        for chunk in (
            model.infer(phone, lengths, sid, head, length),
            model.infer(phone, lengths, sid, head, return_length=length),
            model.infer(phone, lengths, sid, skip_head=head, return_length=length),
            model.infer(phone, lengths, sid, 40, 30),
            model.infer(phone, lengths, sid=sid, skip_head=head, return_length=length),  # our keyword form
        ):
            torch.testing.assert_close(chunk[0], expected_chunk, atol=1e-5, rtol=0)
        resampled = model.infer(phone, lengths, sid, head, length, torch.tensor(45))
        assert resampled[0].shape == (1, 1, 45 * config.hop_length)
        keyword = model.infer(phone, lengths, sid, head, length, return_length2=torch.tensor(45))
        torch.testing.assert_close(keyword[0], resampled[0], atol=0, rtol=0)
        # our own 5-slot form with the pitch slots empty (how rvc_peft.training calls every model)
        torch.testing.assert_close(model.infer(phone, lengths, None, None, sid)[0], expected_full, atol=1e-5, rtol=0)
        with pytest.raises(TypeError, match="multiple values for argument 'return_length'"):
            model.infer(phone, lengths, sid, head, length, return_length=length)
        with pytest.raises(TypeError, match="multiple values for argument 'return_length2'"):
            model.infer(phone, lengths, sid, head, length, length, return_length2=length)


def test_pitch_model_requires_pitch() -> None:
    model = RVCSynthesizer(small_config("v1", True, 40000)).eval()
    x = random_inputs(model.config)
    del x["pitch"]
    with pytest.raises(ValueError, match="this RVC model uses pitch: pass `pitch`"):
        model.infer(**x)


def test_folding_a_deep_copy_leaves_the_original_intact() -> None:
    import copy

    model = RVCSynthesizer(small_config("v2", True, 40000)).eval()
    folded = fold_weight_norm(copy.deepcopy(model))
    x = random_inputs(model.config)
    with torch.no_grad(), no_noise():
        torch.testing.assert_close(folded.infer(**x)[0], model.infer(**x)[0], atol=1e-6, rtol=0)
    assert type(model.dec.ups[0]).__name__ == "ParametrizedConvTranspose1d"
    assert type(folded.dec.ups[0]) is torch.nn.ConvTranspose1d
