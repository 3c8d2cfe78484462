"""Every file format rvc-peft reads, against every kind of hostile or damaged file.

For each (format, kind) pair the reader must raise a `ValueError` or `OSError` subclass (what the CLI prints as one
line) whose message names the file, and a pickle that would run code must never run it (no marker file appears).
A format that has nothing to test for a kind (a safetensors file cannot hold a pickle) is left out of that kind.

Formats: RVC base `.pth` ({"model": G}), exported voice, training `G_*.pth`, our Hugging Face folder
(`model.safetensors`), adapter folders (`adapter_model.safetensors`, `adapter_config.json`), discriminator `.pth`,
fairseq HuBERT/ContentVec `.pt`, RMVPE `.pt`, faiss `.index`.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import rvc_peft.tuners  # noqa: F401  (installs the RVC LoRA tuner)
from rvc_peft.checkpoints import export_rvc, load_discriminator, load_synthesizer
from rvc_peft.models import MultiPeriodDiscriminator
from rvc_peft.testing import random_synthesizer, randomize_lora, small_config, tiny_content_encoder

# --- building one good file per format ---------------------------------------------------------------------------


def _fairseq_names(hubert_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers HubertModel names -> fairseq's (the inverse of `fairseq_checkpoint._KEY_RULES`)."""
    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.2."),
        (r"feature_projection\.layer_norm\.", "layer_norm."),
        (r"feature_projection\.projection\.", "post_extract_proj."),
        (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
        (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
        (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
        (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
        (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
        (r"masked_spec_embed", "mask_emb"),
    ]
    out = {}
    for key, value in hubert_state.items():
        for pattern, target in rules:
            key = re.sub(pattern, target, key)
        out[key] = value.detach().clone()
    return out


FAIRSEQ_CFG = {
    "_name": "hubert", "encoder_layers": 12, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2, "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 256,
}


def _write_fairseq(path: Path, cfg: dict | None = None) -> None:
    encoder = tiny_content_encoder()
    state = _fairseq_names(encoder.hubert.state_dict())
    state.update({f"final_proj.{k}": v.detach().clone() for k, v in encoder.final_proj.state_dict().items()})
    state["label_embs_concat"] = torch.randn(504, 256)
    torch.save({"model": state, "cfg": {"model": cfg or FAIRSEQ_CFG, "task": {"normalize": False}}, "args": None},
               path)


@dataclass
class Format:
    """One format: `make(folder) -> good file`, `load(path)`, and where its tensors live for the value kinds."""

    name: str
    make: Callable[[Path], Path]
    load: Callable[[Path], object]
    tensors: str  # "pth-model", "pth-weight", "pth-flat", "safetensors", "fairseq", "index", "none"
    weights: Callable[[Path], Path] = lambda path: path  # the file inside a folder format that holds the weights


def _synth():
    return random_synthesizer(small_config("v2", True, 40000))


def _make_base(folder: Path) -> Path:
    torch.save({"model": {k: v.half() for k, v in _legacy_state().items()}}, folder / "f0G40k.pth")
    return folder / "f0G40k.pth"


def _legacy_state() -> dict[str, torch.Tensor]:
    from rvc_peft.checkpoints import rvc_state_dict

    return rvc_state_dict(_synth())


def _make_training(folder: Path) -> Path:
    state = _legacy_state()
    torch.save({"model": state, "iteration": 3, "optimizer": {"state": {}, "param_groups": []},
                "learning_rate": 1e-4}, folder / "G_3.pth")
    return folder / "G_3.pth"


def _make_exported(folder: Path) -> Path:
    return export_rvc(_synth(), folder / "voice.pth")


def _make_hf(folder: Path) -> Path:
    _synth().save_pretrained(folder / "hf")
    return folder / "hf"


def _make_discriminator(folder: Path) -> Path:
    torch.manual_seed(0)
    model = MultiPeriodDiscriminator("v1")
    from rvc_peft.models.weight_norm import to_legacy_keys

    torch.save({"model": {k: v.half() for k, v in to_legacy_keys(model.state_dict()).items()}}, folder / "f0D40k.pth")
    return folder / "f0D40k.pth"


def _make_adapter(folder: Path) -> Path:
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    model = get_rvc_peft_model(_synth(), RVCLoraConfig(target_modules="all", r=2, lora_alpha=4))
    randomize_lora(model, scale=0.05)
    model.save_pretrained(folder / "adapter")
    return folder / "adapter"


def _make_fairseq(folder: Path) -> Path:
    _write_fairseq(folder / "hubert_base.pt")
    return folder / "hubert_base.pt"


def _make_rmvpe(folder: Path) -> Path:
    from rvc_peft.features.rmvpe import E2E

    torch.manual_seed(0)
    torch.save(E2E().half().state_dict(), folder / "rmvpe.pt")
    return folder / "rmvpe.pt"


def _make_index(folder: Path) -> Path:
    import faiss

    vectors = np.random.RandomState(0).randn(300, 16).astype("float32")
    index = faiss.index_factory(16, "IVF4,Flat")
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(folder / "added.index"))
    return folder / "added.index"


def _load_adapter(path: Path) -> object:
    from rvc_peft.tuners import export_merged_voice

    return export_merged_voice(ADAPTER_BASE, path, path.parent / "merged.pth")


def _load_content_encoder(path: Path) -> object:
    from rvc_peft.features.content_encoder import load_content_encoder

    return load_content_encoder(path, "v1")


def _load_rmvpe(path: Path) -> object:
    from rvc_peft.features.rmvpe import load_rmvpe

    return load_rmvpe(path)


def _load_index(path: Path) -> object:
    from rvc_peft.data.index import load_index

    return load_index(path)


ADAPTER_BASE: Path  # set by the `good` fixture: the exported voice the adapters are merged into

FORMATS = {
    "base.pth": Format("base.pth", _make_base, load_synthesizer, "pth-model"),
    "G_n.pth": Format("G_n.pth", _make_training, load_synthesizer, "pth-model"),
    "exported.pth": Format("exported.pth", _make_exported, load_synthesizer, "pth-weight"),
    "hf-folder": Format("hf-folder", _make_hf, load_synthesizer, "safetensors",
                        lambda p: p / "model.safetensors"),
    "adapter": Format("adapter", _make_adapter, _load_adapter, "safetensors",
                      lambda p: p / "adapter_model.safetensors"),
    "D.pth": Format("D.pth", _make_discriminator, load_discriminator, "pth-model"),
    "fairseq.pt": Format("fairseq.pt", _make_fairseq, _load_content_encoder, "fairseq"),
    "rmvpe.pt": Format("rmvpe.pt", _make_rmvpe, _load_rmvpe, "pth-flat"),
    ".index": Format(".index", _make_index, _load_index, "index"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """One valid file (or folder) per format; each loads without error."""
    global ADAPTER_BASE
    root = tmp_path_factory.mktemp("good")
    ADAPTER_BASE = _make_exported(root)
    files = {}
    for name, fmt in FORMATS.items():
        folder = root / re.sub(r"\W", "_", name)
        folder.mkdir()
        files[name] = fmt.make(folder)
    return files


# --- the hostile kinds ----------------------------------------------------------------------------------------------

MARKER_NAME = "pwned"


class _Payload:
    """Pickles as a call to os.system that creates a marker file: loading it must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _copy(fmt: Format, source: Path, target_dir: Path) -> Path:
    target = target_dir / source.name
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    return target


def _rewrite_tensors(fmt: Format, path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Apply `change` to the format's weight dict and write the file back in the same format."""
    if fmt.tensors in ("pth-model", "pth-weight", "pth-flat"):
        obj = torch.load(path, weights_only=True)
        state = obj["model"] if fmt.tensors == "pth-model" else obj["weight"] if fmt.tensors == "pth-weight" else obj
        change(state)
        torch.save(obj, path)
    elif fmt.tensors == "safetensors":
        file = fmt.weights(path)
        state = load_file(file)
        change(state)
        save_file(state, file, metadata={"format": "pt"})
    elif fmt.tensors == "fairseq":
        from rvc_peft.features.fairseq_checkpoint import read_checkpoint

        obj = read_checkpoint(path)
        change(obj["model"])
        obj["model"] = {k: v.clone() for k, v in obj["model"].items()}
        torch.save(obj, path)
    else:
        raise AssertionError(fmt.tensors)


def _pick(state: dict[str, torch.Tensor]) -> str:
    """The largest floating tensor the model uses (fairseq's pre-training label table is dropped on loading)."""
    return max((k for k, v in state.items() if v.is_floating_point() and k != "label_embs_concat"),
               key=lambda k: state[k].numel())


def _set(value: float):
    def change(state):
        key = _pick(state)
        state[key] = state[key].clone()
        state[key].view(-1)[7] = value
    return change


def _to_int(state):
    key = _pick(state)
    state[key] = state[key].round().to(torch.int64)


def _reshape(state):
    key = _pick(state)
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1, dtype=state[key].dtype)


def _flip_inside_first_tensor(path: Path) -> None:
    """Flip one bit in the data of a zip member (a tensor record, not a header): only CRCs can catch it."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x04
    path.write_bytes(bytes(data))


def _weights_file(fmt: Format, path: Path) -> Path:
    return fmt.weights(path) if path.is_dir() else path


def kind_pickle(fmt: Format, path: Path, marker: Path) -> Path | None:
    if fmt.tensors in ("safetensors", "index"):
        if fmt.name != "adapter":
            return None
        # an adapter folder with a pickled adapter_model.bin in place of safetensors (stock PEFT would unpickle it)
        (path / "adapter_model.safetensors").unlink()
        torch.save({"x": _Payload(marker)}, path / "adapter_model.bin")
        return path / "adapter_model.bin"
    payload = _Payload(marker)
    if fmt.tensors == "fairseq":
        torch.save({"model": {"w": torch.zeros(2)}, "cfg": payload}, path)
    else:
        torch.save({"model": payload, "weight": payload}, path)
    return path


def kind_legacy_pickle(fmt: Format, path: Path, marker: Path) -> Path | None:
    if fmt.tensors in ("safetensors", "index", "fairseq"):
        return None
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))
    return path


def kind_truncated(fmt: Format, path: Path, marker: Path) -> Path:
    file = _weights_file(fmt, path)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 3])
    return file


def kind_bitflip(fmt: Format, path: Path, marker: Path) -> Path | None:
    file = _weights_file(fmt, path)
    if fmt.tensors in ("pth-model", "pth-weight", "pth-flat", "fairseq"):
        _flip_inside_first_tensor(file)
    elif fmt.tensors == "safetensors":
        # safetensors has no checksum; a flip in the JSON header must still be a clean error
        data = bytearray(file.read_bytes())
        data[12] ^= 0x20  # inside the header's JSON text
        file.write_bytes(bytes(data))
    else:  # .index: faiss has no checksum; a flipped header field
        data = bytearray(file.read_bytes())
        data[0] ^= 0x01  # the index type fourcc
        file.write_bytes(bytes(data))
    return file


def kind_empty(fmt: Format, path: Path, marker: Path) -> Path:
    file = _weights_file(fmt, path)
    file.write_bytes(b"")
    return file


def kind_directory(fmt: Format, path: Path, marker: Path) -> Path:
    file = _weights_file(fmt, path)
    file.unlink()
    file.mkdir()
    (file / "something").write_text("x")
    return file


def _value_kind(change):
    def kind(fmt: Format, path: Path, marker: Path) -> Path | None:
        if fmt.tensors == "index":
            return None
        _rewrite_tensors(fmt, path, change)
        return _weights_file(fmt, path)
    return kind


def kind_index_values(value: float):
    def kind(fmt: Format, path: Path, marker: Path) -> Path | None:
        if fmt.tensors != "index":
            return None
        import faiss

        vectors = np.random.RandomState(0).randn(300, 16).astype("float32")
        vectors[5, 3] = value
        index = faiss.index_factory(16, "Flat")
        index.add(vectors)
        faiss.write_index(index, str(path))
        return path
    return kind


KINDS = {
    "pickle-runs-code": kind_pickle,
    "legacy-pickle-runs-code": kind_legacy_pickle,
    "truncated": kind_truncated,
    "bit-flipped": kind_bitflip,
    "empty": kind_empty,
    "directory": kind_directory,
    "nan": _value_kind(_set(float("nan"))),
    "inf": _value_kind(_set(float("inf"))),
    "huge": _value_kind(_set(3.0e38)),
    "integer-dtype": _value_kind(_to_int),
    "wrong-shape": _value_kind(_reshape),
    "index-nan": kind_index_values(float("nan")),
    "index-huge": kind_index_values(1e30),
}
# float16 files cannot hold 3e38: it would be written as inf, which is another kind
_HALF_FORMATS = {"base.pth", "exported.pth", "D.pth", "rmvpe.pt"}
# Expected error text per kind (a regex searched in the message, after the file name check).
EXPECTED = {
    "pickle-runs-code": r"run Python code|not allowed in a weights checkpoint|pickle-format adapter",
    "legacy-pickle-runs-code": r"run Python code",
    "truncated": r"truncated|damaged|not a readable|not a zip|corrupt|cannot be read",
    "bit-flipped": r"CRC check failed|not a readable|corrupt|damaged",
    "empty": r"empty",
    "directory": r"folder|directory",
    "nan": r"contains NaN",
    "inf": r"contains inf",
    "huge": r"max \|value\| 3\.0e\+38 is not a trained weight",
    "integer-dtype": r"has integer dtype torch\.int64 where floating weights are expected",
    "wrong-shape": r"shape|do not fit|does not fit|inputs, but the model width",
    "index-nan": r"NaN or inf",
    "index-huge": r"\|value\| 1\.0e\+30",
}

CASES = [(f, k) for f in FORMATS for k in KINDS]


def _case_applies(fmt: str, kind: str) -> bool:
    if kind == "huge" and fmt in _HALF_FORMATS:
        return False
    if kind == "legacy-pickle-runs-code" and FORMATS[fmt].tensors in ("safetensors", "index", "fairseq"):
        return False
    if kind == "pickle-runs-code" and FORMATS[fmt].tensors in ("safetensors", "index") and fmt != "adapter":
        return False
    if kind.startswith("index-") and fmt != ".index":
        return False
    value_kinds = ("nan", "inf", "huge", "integer-dtype", "wrong-shape")
    return not (kind in value_kinds and fmt == ".index")


APPLICABLE = [(f, k) for f, k in CASES if _case_applies(f, k)]


def test_every_good_file_loads(good) -> None:
    for name, fmt in FORMATS.items():
        fmt.load(good[name])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt,kind", APPLICABLE, ids=[f"{f}-{k}" for f, k in APPLICABLE])
def test_hostile_file_is_a_clear_error(good, tmp_path, fmt, kind) -> None:
    marker = tmp_path / MARKER_NAME
    target = _copy(FORMATS[fmt], good[fmt], tmp_path)
    named = KINDS[kind](FORMATS[fmt], target, marker)
    assert named is not None
    with pytest.raises((ValueError, OSError)) as caught:
        FORMATS[fmt].load(target)
    message = str(caught.value)
    assert not marker.exists(), "the pickle ran code"
    assert named.name in message, message
    assert re.search(EXPECTED[kind], message), message
    assert "weights_only=False" not in message  # torch's advice to load a stranger's pickle unsafely


def test_case_counts() -> None:
    """The table covers every format and kind it claims to (the counts are quoted in the issue report)."""
    counts = collections.Counter(kind for _, kind in APPLICABLE)
    assert counts == {
        "pickle-runs-code": 7, "legacy-pickle-runs-code": 5, "truncated": 9, "bit-flipped": 9, "empty": 9,
        "directory": 9, "nan": 8, "inf": 8, "huge": 4, "integer-dtype": 8, "wrong-shape": 8, "index-nan": 1,
        "index-huge": 1,
    }
    assert len(APPLICABLE) == 86
    assert {f for f, _ in APPLICABLE} == set(FORMATS)


def test_adapter_config_json_damage(good, tmp_path) -> None:
    """Broken adapter_config.json: not JSON, not an object, unknown peft_type, missing."""
    from rvc_peft.tuners import export_merged_voice

    cases = {
        "not-json": ("{not json", r"adapter_config\.json: not valid JSON"),
        "list": ("[1, 2]", r"adapter_config\.json: holds a JSON list, not an object"),
        "unknown-type": (None, r"adapter_config\.json: peft_type 'MAGIC' is not a PEFT adapter type"),
    }
    for name, (text, pattern) in cases.items():
        folder = tmp_path / name
        shutil.copytree(good["adapter"], folder)
        if text is None:
            config = json.loads((folder / "adapter_config.json").read_text())
            config["peft_type"] = "MAGIC"
            text = json.dumps(config)
        (folder / "adapter_config.json").write_text(text)
        with pytest.raises(ValueError, match=pattern):
            export_merged_voice(ADAPTER_BASE, folder, tmp_path / f"{name}.pth")
        assert not (tmp_path / f"{name}.pth").exists()
    folder = tmp_path / "no-config"
    shutil.copytree(good["adapter"], folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(ValueError, match=r"no-config/adapter_config\.json: not found"):
        export_merged_voice(ADAPTER_BASE, folder, tmp_path / "x.pth")
    folder = tmp_path / "no-weights"
    shutil.copytree(good["adapter"], folder)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no-weights/adapter_model\.safetensors: not found"):
        export_merged_voice(ADAPTER_BASE, folder, tmp_path / "x.pth")
