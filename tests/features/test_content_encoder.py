"""ContentEncoder on tiny random transformers HuBERTs saved in the real folder layouts (no fairseq needed)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import HubertConfig, HubertModel

from rvc_peft.features.content_encoder import (
    ContentEncoder,
    ContentEncoderError,
    load_content_encoder,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread (and do not suffer when other jobs load the machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_config(**overrides) -> HubertConfig:
    # HuBERT-base's conv stack (kernels 10,3,3,3,3,2,2 / strides 5,2,...) with few channels, and 12 layers.
    sizes = {"hidden_size": 32, "num_hidden_layers": 12, "num_attention_heads": 2, "intermediate_size": 64,
             "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
             "classifier_proj_size": 24}
    return HubertConfig(**(sizes | overrides))


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norm scales around 1 (so a skipped or misplaced norm changes the output)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + offset)


@pytest.fixture(scope="module")
def hubert_folder(tmp_path_factory):
    """An Applio / RVC-main style folder: HubertModel weights + final_proj.* in model.safetensors."""
    torch.manual_seed(0)
    hubert = HubertModel(_tiny_config()).eval()
    _randomise(hubert)
    final_proj = torch.nn.Linear(32, 24)
    folder = tmp_path_factory.mktemp("contentvec")
    tensors = {**hubert.state_dict(), **{f"final_proj.{k}": v for k, v in final_proj.state_dict().items()}}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(hubert.config.to_json_string())
    return folder, hubert, final_proj


def test_v1_and_v2_follow_transformers_hidden_states(hubert_folder):
    folder, hubert, final_proj = hubert_folder
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        hidden = hubert(wav, output_hidden_states=True).hidden_states
        v1 = load_content_encoder(folder, "v1")(wav)
        v2 = load_content_encoder(folder, "v2")(wav)
    # RVC main: v1 = final_proj(hidden_states[9]), v2 = hidden_states[12] (== fairseq output_layer 9 / 12)
    torch.testing.assert_close(v1, final_proj(hidden[9]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v2, hidden[12], rtol=1e-5, atol=1e-5)
    assert v1.shape == (2, 49, 24) and v2.shape == (2, 49, 32)


def test_frame_count_is_rvcs_formula(hubert_folder):
    encoder = load_content_encoder(hubert_folder[0], "v2")
    for num_samples in (400, 719, 720, 1040, 16000, 48123):
        feats = encoder.extract(np.zeros(num_samples, np.float32))
        assert feats.shape == ((num_samples - 400) // 320 + 1, 32) == (encoder.num_frames(num_samples), 32)
        assert feats.dtype == np.float32


def test_attributes_and_frozen_eval_mode(hubert_folder):
    encoder = load_content_encoder(hubert_folder[0], "v1", dtype=torch.float64)
    assert isinstance(encoder, ContentEncoder) and isinstance(encoder.hubert, HubertModel)
    assert (encoder.version, encoder.output_dim, encoder.kind, encoder.normalize) == ("v1", 24, "contentvec", False)
    assert encoder.name_or_path == str(hubert_folder[0])
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert all(p.dtype == torch.float64 for p in encoder.parameters())
    assert encoder.extract(torch.zeros(800)).dtype == np.float32


def test_legacy_layouts_load_to_the_same_features(hubert_folder, tmp_path):
    """weight_g/weight_v spelling, a `hubert.` prefix with a CTC head, and pytorch_model.bin."""
    folder, _, _ = hubert_folder
    state = load_file(str(folder / "model.safetensors"))
    legacy = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        legacy[key if key.startswith("final_proj") else f"hubert.{key}"] = value
    legacy["lm_head.weight"] = torch.zeros(5, 32)
    del legacy["hubert.masked_spec_embed"]  # absent when the model was saved without masking
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        for version in ("v1", "v2"):
            expected = load_content_encoder(folder, version)(wav)
            torch.testing.assert_close(load_content_encoder(tmp_path, version)(wav), expected, rtol=0, atol=0)
        # the path of a weights file inside the folder stands for the folder
        torch.testing.assert_close(load_content_encoder(tmp_path / "pytorch_model.bin", "v2")(wav), expected)


def test_normalize_flag_from_preprocessor_config(tmp_path):
    # A layer-norm extractor with conv bias (HuBERT-large style): unlike the group-norm stack it is not
    # invariant to the waveform's offset and scale, so normalising the waveform changes the features.
    hubert = HubertModel(_tiny_config(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)).eval()
    _randomise(hubert, seed=1)
    save_file({k: v.contiguous() for k, v in hubert.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(hubert.config.to_json_string())
    plain = load_content_encoder(tmp_path, "v2")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    normalized = load_content_encoder(tmp_path, "v2")
    assert normalized.normalize and not plain.normalize
    wav = 0.3 * torch.randn(1, 6400) + 0.1
    with torch.no_grad():
        torch.testing.assert_close(normalized(wav), plain(F.layer_norm(wav, wav.shape[-1:])), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(normalized(wav), plain(wav), atol=1e-3)


def test_save_pretrained_round_trip(hubert_folder, tmp_path):
    encoder = load_content_encoder(hubert_folder[0], "v1", kind="contentvec")
    encoder.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["classifier_proj_size"] == 24 and config["content_encoder_kind"] == "contentvec"
    reloaded = load_content_encoder(tmp_path / "saved" / "config.json", "v1")  # a config.json path works too
    wav = torch.randn(1, 4000)
    with torch.no_grad():
        assert torch.equal(reloaded(wav), encoder(wav))
    # transformers itself reads the folder (final_proj is simply an extra weight for it)
    plain = HubertModel.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(wav, output_hidden_states=True).hidden_states[12],
                                   load_content_encoder(tmp_path / "saved", "v2")(wav), rtol=1e-5, atol=1e-5)


def test_errors_name_the_file(hubert_folder, tmp_path):
    folder, hubert, _ = hubert_folder
    no_proj = tmp_path / "no_proj"
    no_proj.mkdir()
    save_file({k: v.contiguous() for k, v in hubert.state_dict().items()}, str(no_proj / "model.safetensors"))
    (no_proj / "config.json").write_text(hubert.config.to_json_string())
    assert load_content_encoder(no_proj, "v2").kind == "hubert"
    with pytest.raises(ContentEncoderError, match=r"no_proj: v1 features are final_proj\(layer 9\)"):
        load_content_encoder(no_proj, "v1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContentEncoderError, match="empty: no config.json"):
        load_content_encoder(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(hubert.config.to_json_string())
    with pytest.raises(ContentEncoderError, match="noweights: no weights"):
        load_content_encoder(tmp_path / "noweights")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ContentEncoderError, match=r"config.json: model_type is 'bert', not 'hubert'"):
        load_content_encoder(tmp_path / "bert")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text(hubert.config.to_json_string())
    (tmp_path / "damaged" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ContentEncoderError, match="model.safetensors: cannot read weights"):
        load_content_encoder(tmp_path / "damaged")
    (tmp_path / "mismatch").mkdir()
    (tmp_path / "mismatch" / "config.json").write_text(_tiny_config(hidden_size=48).to_json_string())
    (tmp_path / "mismatch" / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ContentEncoderError, match="mismatch: weights do not fit the model config"):
        load_content_encoder(tmp_path / "mismatch")
    with pytest.raises(ContentEncoderError, match="too short"):
        load_content_encoder(folder).extract(np.zeros(399, np.float32))
    with pytest.raises(ContentEncoderError, match="unknown RVC version 'v3'"):
        load_content_encoder(folder, "v3")
    with pytest.raises(ContentEncoderError, match="missing.pt: no such file or folder"):
        load_content_encoder(tmp_path / "missing.pt")


def test_hub_ids_go_through_huggingface_hub(hubert_folder, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, revision=None, allow_patterns=None):
        calls.append(("snapshot", repo_id, revision))
        return str(hubert_folder[0])

    def fake_file(repo_id, filename, revision=None):
        calls.append(("file", repo_id, filename))
        return str(hubert_folder[0] / "config.json")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    assert load_content_encoder("someone/contentvec", "v1", revision="main").output_dim == 24
    load_content_encoder("someone/rvc-assets/hubert/config.json")
    assert calls == [("snapshot", "someone/contentvec", "main"), ("file", "someone/rvc-assets", "hubert/config.json")]


def test_missing_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ContentEncoderError, match=r"nobody-here/no-such-contentvec: not a local file or folder, "
                                                  r"and cannot get it from the Hugging Face Hub \(HF_HUB_OFFLINE"):
        load_content_encoder("nobody-here/no-such-contentvec")
    with pytest.raises(ContentEncoderError, match="nobody-here/no-such-repo/hubert_base.pt: not a local file"):
        load_content_encoder("nobody-here/no-such-repo", filename="hubert_base.pt")
