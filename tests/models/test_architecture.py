"""Key names, shapes and counts of every official RVC configuration against the reference tables."""

import pytest
import torch

from rvc_peft.models import MultiPeriodDiscriminator, RVCConfig, RVCSynthesizer, to_legacy_keys

from .rvc_inventory import COUNTS, DISCRIMINATOR_COUNTS, LAYOUTS, NONO_KEYS_V1_5STAGE, expected_shapes


def _meta_model(version: str, sr: int, f0: bool) -> RVCSynthesizer:
    with torch.device("meta"):
        return RVCSynthesizer(RVCConfig.from_preset(sr, version, f0))


@pytest.mark.parametrize("version,sr", sorted(LAYOUTS))
@pytest.mark.parametrize("f0", [True, False])
def test_keys_and_shapes_match_rvc(version: str, sr: int, f0: bool) -> None:
    model = _meta_model(version, sr, f0)
    ours = {k: tuple(v.shape) for k, v in to_legacy_keys(model.state_dict()).items()}
    assert ours == expected_shapes(version, sr, f0)


@pytest.mark.parametrize("key", sorted(COUNTS))
def test_key_and_parameter_counts(key: tuple[str, int, bool]) -> None:
    keys_all, keys_no_q, params_all, params_no_q = COUNTS[key]
    model = _meta_model(*key)
    state = model.state_dict()
    assert len(state) == keys_all
    assert len([k for k in state if not k.startswith("enc_q.")]) == keys_no_q
    assert sum(p.numel() for p in model.parameters()) == params_all
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("enc_q.")) == params_no_q


def test_five_stage_no_pitch_key_count() -> None:
    state = _meta_model("v1", 48000, False).state_dict()
    assert (len(state), len([k for k in state if not k.startswith("enc_q.")])) == NONO_KEYS_V1_5STAGE


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_discriminator_counts(version: str) -> None:
    with torch.device("meta"):
        disc = MultiPeriodDiscriminator(version)
    keys, params = DISCRIMINATOR_COUNTS[version]
    assert len(disc.state_dict()) == keys
    assert sum(p.numel() for p in disc.parameters()) == params


def test_config_list_round_trip() -> None:
    config = RVCConfig.from_preset("48k", "v2", True)
    values = config.to_rvc_list()
    assert values == [1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11], [[1, 3, 5]] * 3, [12, 10, 2, 2], 512,
                      [24, 20, 4, 4], 109, 256, 48000]
    again = RVCConfig.from_rvc_list(values, version="v2", use_f0=True)
    assert again.to_rvc_list() == values
    assert (again.hop_length, again.filter_length, again.n_mel_channels) == (480, 2048, 128)


def test_config_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="unknown RVC version 'v3'"):
        RVCConfig(version="v3")
    with pytest.raises(ValueError, match="RVC has no v1 24k configuration"):
        RVCConfig.from_preset("24k", "v1")
    with pytest.raises(ValueError, match="unknown sample rate"):
        RVCConfig.from_preset("44.1k", "v2")
