"""Crafted configs inside fairseq content-encoder checkpoints: every value is bounded and checked, fast.

The config of a `.pt` file sizes the model before any weight is read; a crafted one must not crash with a raw
TypeError/ZeroDivisionError/RecursionError, fill memory, hang, or run code (`conv_feature_layers` is a Python-like
expression string: it is parsed, never evaluated). Each case is a `FairseqCheckpointError` naming the file and key.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from rvc_peft.features.content_encoder import load_content_encoder
from rvc_peft.features.fairseq_checkpoint import FairseqCheckpointError
from rvc_peft.features.fairseq_config import ConfigValueError, parse_conv_feature_layers, validate_model_config

GOOD = {
    "_name": "hubert", "encoder_layers": 12, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2, "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "conv_pos": 16, "conv_pos_groups": 4, "final_dim": 256,
}


def _save(path, cfg=None, args=None, task_state=None) -> None:
    checkpoint = {"model": {"label_embs_concat": torch.zeros(504, 8)}, "cfg": cfg, "args": args}
    if task_state is not None:
        checkpoint["task_state"] = task_state
    torch.save(checkpoint, path)


def _refused(path, pattern: str) -> str:
    started = time.perf_counter()
    with pytest.raises(FairseqCheckpointError) as caught:
        load_content_encoder(path, "v1")
    assert time.perf_counter() - started < 5.0, "a crafted config must fail fast"
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message
    return message


@pytest.mark.parametrize("key,value,pattern", [
    ("encoder_layers", 1_000_000, r"encoder_layers is 1000000; expected an integer from 1 to 48"),
    ("encoder_layers", 0, r"encoder_layers is 0; expected an integer from 1 to 48"),
    ("encoder_layers", "twelve", r"encoder_layers is 'twelve' \(str\); expected an integer"),
    ("encoder_layers", [12], r"encoder_layers is \[12\] \(list\); expected an integer"),
    ("encoder_layers", 12.5, r"encoder_layers is 12\.5 \(float\); expected an integer"),
    ("encoder_layers", True, r"encoder_layers is True \(bool\); expected an integer"),
    ("encoder_attention_heads", 0, r"encoder_attention_heads is 0; expected an integer from 1 to 64"),
    ("encoder_attention_heads", 3, r"encoder_attention_heads 3 does not divide encoder_embed_dim 32"),
    ("encoder_embed_dim", -32, r"encoder_embed_dim is -32; expected an integer from 1 to 4096"),
    ("encoder_embed_dim", 10**9, r"encoder_embed_dim is 1000000000; expected an integer from 1 to 4096"),
    ("encoder_ffn_embed_dim", 10**7, r"encoder_ffn_embed_dim is 10000000"),
    ("conv_pos", -1, r"conv_pos is -1"),
    ("conv_pos_groups", 5, r"conv_pos_groups 5 does not divide encoder_embed_dim 32"),
    ("final_dim", -5, r"final_dim is -5"),
    ("dropout", "0.1", r"dropout is '0\.1'; expected a probability from 0 to 1"),
    ("dropout", 7.0, r"dropout is 7\.0; expected a probability"),
    ("layer_norm_first", "yes", r"layer_norm_first is 'yes'; expected true or false"),
    ("activation_fn", "eval", r"activation_fn is 'eval'; supported: 'gelu', 'relu'"),
    ("extractor_mode", ["default"], r"extractor_mode is \['default'\]; supported"),
    ("layer_type", "conformer", r"layer_type is 'conformer'; supported: 'transformer'"),
    ("pos_conv_depth", 5, r"pos_conv_depth is 5"),
    ("conv_feature_layers", "[(16,10,5)] * 1000000000", r"holds the number 1000000000"),
    ("conv_feature_layers", "[(16,10,5)] * 100000", r"repeats a list past 16 layers"),
    ("conv_feature_layers", "[(16,10,5)] * 17", r"repeats a list past 16 layers"),
    ("conv_feature_layers", [[16, 10, 5]] * 1000, r"conv_feature_layers has 1000 layers; expected 1 to 16"),
    ("conv_feature_layers", "[]", r"conv_feature_layers has 0 layers"),
    ("conv_feature_layers", "[(-16,10,5)]", r"layer 0 dim is -16; expected an integer from 1 to 4096"),
    ("conv_feature_layers", "[(16,0,5)]", r"layer 0 kernel is 0"),
    ("conv_feature_layers", "[(16,10,5)] + [(16, 3, 99999999)]", r"holds the number 99999999"),
    ("conv_feature_layers", "[(16,10,5)]" + " + [(16,3,2)]" * 3000, r"-character string"),
    ("conv_feature_layers", 12, r"conv_feature_layers is 12; expected a list"),
    ("conv_feature_layers", "[(16,10,5)] + 3", r"mixes numbers and lists"),
    ("conv_feature_layers", "[(16, 10)]", r"not a list of \(dim, kernel, stride\) tuples"),
])
def test_bad_values_name_the_file_and_key(tmp_path, key, value, pattern) -> None:
    path = tmp_path / "hubert_base.pt"
    _save(path, cfg={"model": {**GOOD, key: value}, "task": {}})
    message = _refused(path, pattern)
    assert "invalid model config (cfg.model)" in message


def test_old_args_namespace_is_checked_too(tmp_path) -> None:
    import argparse

    path = tmp_path / "old.pt"
    _save(path, args=argparse.Namespace(**{**GOOD, "arch": "hubert", "encoder_attention_heads": 0}))
    _refused(path, r"invalid model config \(args\): encoder_attention_heads is 0")


def test_conv_expression_is_never_evaluated(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "code.pt"
    for spec in (f"__import__('os').system('touch {marker}')", f"[(16,10,5)] + eval(\"open('{marker}','w')\")",
                 "[(16,10,5)] if True else []", "[x for x in (1,)]"):
        _save(path, cfg={"model": {**GOOD, "conv_feature_layers": spec}, "task": {}})
        _refused(path, r"unsupported expression in conv_feature_layers|is not a list expression")
    assert not marker.exists()


def test_self_referencing_and_exploding_structures(tmp_path) -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    path = tmp_path / "cycle.pt"
    _save(path, cfg={"model": {**GOOD, "extra": cyclic}, "task": {}})
    _refused(path, r"'cfg' is not a usable config: a container that contains itself")

    laughs: list = []
    for _ in range(40):  # 2^40 paths through a pickle of a few hundred bytes
        laughs = [laughs, laughs]
    path = tmp_path / "laughs.pt"
    _save(path, cfg={"model": GOOD, "task": {}}, task_state={"dictionaries": laughs})
    _refused(path, r"'task_state' is not a usable config: more than 100000 values")

    deep: list = []
    for _ in range(200):
        deep = [deep]
    path = tmp_path / "deep.pt"
    _save(path, args={"arch": "hubert", "nested": deep})
    _refused(path, r"'args' is not a usable config: nested more than 64 levels deep")


def test_config_of_the_wrong_type(tmp_path) -> None:
    path = tmp_path / "string.pt"
    _save(path, cfg="hubert")
    _refused(path, r"'cfg' is a str, not a mapping")
    path = tmp_path / "list.pt"
    _save(path, cfg=None, args=[1, 2, 3])
    _refused(path, r"'args' is a list, not a mapping")


def test_bytes_bomb_and_oversized_views_are_refused(tmp_path) -> None:
    import zipfile

    from rvc_peft.features.fairseq_checkpoint import read_checkpoint

    # bytes(8 GB) from a few bytes of pickle: GLOBAL builtins.bytes, an int, REDUCE
    path = tmp_path / "bomb.pt"
    torch.save({"model": {}}, path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    pkl = next(name for name in members if name.endswith("data.pkl"))
    members[pkl] = b"\x80\x02cbuiltins\nbytes\n\x8a\x05\x00\x00\x00\x00\x02\x85R."  # bytes(2**33)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    started = time.perf_counter()
    with pytest.raises(FairseqCheckpointError, match=r"bomb\.pt: cannot unpickle .*bytes\(8589934592\)"):
        read_checkpoint(path)
    assert time.perf_counter() - started < 2.0

    # a tensor view claiming 10^12 elements over a 4-element storage (stride 0)
    path = tmp_path / "view.pt"
    base = torch.zeros(4)
    torch.save({"model": {"w": base.as_strided((10**6, 10**6), (0, 0))}}, path)
    with pytest.raises(FairseqCheckpointError, match=r"view\.pt: cannot unpickle .*claims more elements than its "
                                                     r"storage holds \(4\)"):
        read_checkpoint(path)


def test_validators_directly() -> None:
    assert parse_conv_feature_layers([[16, 10, 5], (16, 3, 2)]) == [(16, 10, 5), (16, 3, 2)]
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")[-1] == (512, 2, 2)
    assert parse_conv_feature_layers("2 * [(512,3,2)]") == [(512, 3, 2)] * 2
    cfg = validate_model_config({**GOOD, "layer_norm_first": 1, "dropout": 0})
    assert cfg["layer_norm_first"] is True and cfg["dropout"] == 0.0 and cfg["encoder_layers"] == 12
    with pytest.raises(ConfigValueError, match="not a mapping"):
        validate_model_config(["encoder_layers", 12])
    assert issubclass(ConfigValueError, ValueError)


@pytest.mark.parametrize("key,value,pattern", [
    ("num_hidden_layers", 10**6, r"num_hidden_layers is 1000000; expected an integer from 1 to 48"),
    ("num_attention_heads", 0, r"num_attention_heads is 0"),
    ("num_attention_heads", 5, r"num_attention_heads 5 does not divide hidden_size 32"),
    ("hidden_size", "x", r"hidden_size is 'x' \(str\)"),
    ("conv_dim", [16] * 3, r"conv_dim, conv_kernel and conv_stride must be lists of the same length"),
    ("conv_stride", [5, 2, 2, 2, 2, 2, -2], r"conv_dim/kernel/stride layer 6 stride is -2"),
])
def test_transformers_folder_sizes_are_bounded_too(tmp_path, key, value, pattern) -> None:
    import json

    from rvc_peft.features.content_encoder import ContentEncoderError
    from rvc_peft.testing import tiny_content_encoder

    folder = tmp_path / "encoder"
    tiny_content_encoder().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    started = time.perf_counter()
    with pytest.raises(ContentEncoderError, match=rf"^{re.escape(str(folder / 'config.json'))}: {pattern}"):
        load_content_encoder(folder, "v1")
    assert time.perf_counter() - started < 5.0
