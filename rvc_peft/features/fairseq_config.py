"""The model config of a fairseq HuBERT/ContentVec checkpoint: validated, bounded, turned into a `HubertConfig`.

The config comes out of `fairseq_checkpoint.read_checkpoint` / `to_plain` as plain data; nothing here evaluates any
of it (`conv_feature_layers` is parsed, never `eval`'d), and every value that sizes the model is bounded before it
is used, so a crafted file fails with `ConfigValueError` naming the key instead of exhausting memory or crashing
inside transformers.
"""

from __future__ import annotations

import ast
from typing import Any

from transformers import HubertConfig

# fairseq's defaults (fairseq/models/hubert/hubert.py `HubertConfig`) for fields an old checkpoint may omit.
_FAIRSEQ_HUBERT_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu", "layer_type": "transformer", "dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0,
    "final_dim": 0, "layer_norm_first": False, "conv_bias": False, "conv_pos": 128, "conv_pos_groups": 16,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
}


# --- config validation -------------------------------------------------------------------------------------------
# Every value read from a checkpoint's config is checked before it sizes anything: a crafted file could otherwise
# ask for a million layers (memory), zero heads (ZeroDivisionError deep in transformers) or a string where a number
# belongs (TypeError). The ranges are generous: HuBERT/ContentVec base and large, and wav2vec2-style XL widths.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "encoder_layers": (1, 48), "encoder_embed_dim": (1, 4096), "encoder_ffn_embed_dim": (1, 16384),
    "encoder_attention_heads": (1, 64), "conv_pos": (1, 1024), "conv_pos_groups": (1, 4096), "final_dim": (0, 4096),
    "pos_conv_depth": (1, 1),
}
_FLOAT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "encoder_layerdrop")
_BOOL_KEYS = ("layer_norm_first", "conv_bias", "conv_pos_batch_norm")
_CHOICES = {"extractor_mode": ("default", "layer_norm"), "activation_fn": ("gelu", "relu"),
            "layer_type": ("transformer",)}
_MAX_CONV_LAYERS = 16
_CONV_RANGES = (("dim", 1, 4096), ("kernel", 1, 512), ("stride", 1, 512))
_MAX_CONV_SPEC_CHARS = 2000


class ConfigValueError(ValueError):
    """A config value of the wrong type or outside the range any HuBERT/ContentVec model uses (names the key)."""


def _checked_int(key: str, value: Any) -> int:
    low, high = _INT_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigValueError(f"{key} is {short_repr(value)} ({type(value).__name__}); expected an integer from "
                               f"{low} to {high}")
    if not low <= value <= high:
        raise ConfigValueError(f"{key} is {value}; expected an integer from {low} to {high}")
    return value


def short_repr(value: Any) -> str:
    """repr(value), cut to 60 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_model_config(model_cfg: Any) -> dict[str, Any]:
    """fairseq's defaults overlaid with `model_cfg`, every value checked; raises `ConfigValueError` naming the key.

    Integers: encoder_layers 1..48, encoder_embed_dim 1..4096, encoder_ffn_embed_dim 1..16384, heads 1..64 dividing
    the embed dim, conv_pos 1..1024, conv_pos_groups dividing the embed dim, final_dim 0..4096; dropouts are numbers
    in [0, 1]; flags are booleans (or 0/1); `conv_feature_layers` is 1..16 (dim 1..4096, kernel 1..512,
    stride 1..512) layers, given as fairseq's expression string (parsed, never evaluated) or as a list.
    """
    if not isinstance(model_cfg, dict):
        raise ConfigValueError(f"the model config is a {type(model_cfg).__name__}, not a mapping")
    cfg = {**_FAIRSEQ_HUBERT_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    for key in _INT_RANGES:
        if key in cfg:
            cfg[key] = _checked_int(key, cfg[key])
    for key in _FLOAT_KEYS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ConfigValueError(f"{key} is {short_repr(value)}; expected a probability from 0 to 1")
        cfg[key] = float(value)
    for key in _BOOL_KEYS:
        value = cfg.get(key, False)
        if not (isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))):
            raise ConfigValueError(f"{key} is {short_repr(value)}; expected true or false")
        cfg[key] = bool(value)
    for key, choices in _CHOICES.items():
        if not isinstance(cfg[key], str) or cfg[key] not in choices:
            raise ConfigValueError(f"{key} is {short_repr(cfg[key])}; supported: {', '.join(map(repr, choices))}")
    hidden = cfg["encoder_embed_dim"]
    for key in ("encoder_attention_heads", "conv_pos_groups"):
        if hidden % cfg[key]:
            raise ConfigValueError(f"{key} {cfg[key]} does not divide encoder_embed_dim {hidden}")
    cfg["conv_feature_layers"] = parse_conv_feature_layers(cfg["conv_feature_layers"])
    return cfg


# --- config ------------------------------------------------------------------------------------------------------

def parse_conv_feature_layers(spec: str | list | tuple) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` string, e.g. `"[(512,10,5)] + [(512,3,2)] * 4"`, without `eval`.

    Only list/tuple literals of integers joined by `+` and `*` are accepted (a list of triples is taken as it is).
    Returns `[(dim, kernel, stride), ...]`: 1..16 layers, dim 1..4096, kernel 1..512, stride 1..512. Sizes are
    checked before any list is repeated, so `"[(1,1,1)] * 10**12"`-style strings fail at once instead of filling
    memory. Raises `ConfigValueError` (a `ValueError`).
    """

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return _bounded(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -value(node.operand)  # a negative size: parsed so that the range check can name it
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return _bounded(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, (list, tuple)):
                left, right = right, left
            if isinstance(node.op, ast.Mult) and isinstance(left, (list, tuple)) and (
                    not isinstance(right, int) or right < 0 or len(left) * right > _MAX_CONV_LAYERS):
                raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} repeats a list past {_MAX_CONV_LAYERS} "
                                       "layers")
            try:
                return _bounded(left + right if isinstance(node.op, ast.Add) else left * right)
            except TypeError:
                raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} mixes numbers and lists") from None
        raise ConfigValueError(f"unsupported expression in conv_feature_layers: {ast.dump(node)[:80]}")

    def _bounded(result: Any) -> Any:
        if isinstance(result, int) and abs(result) > 1 << 20:
            raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} holds the number {short_repr(result)}")
        if isinstance(result, (list, tuple)) and len(result) > _MAX_CONV_LAYERS:
            raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} has more than {_MAX_CONV_LAYERS} entries")
        return result

    if isinstance(spec, (list, tuple)):
        layers: Any = [tuple(t) if isinstance(t, (list, tuple)) else t for t in spec]
    elif isinstance(spec, str):
        if len(spec) > _MAX_CONV_SPEC_CHARS:
            raise ConfigValueError(f"conv_feature_layers is a {len(spec)}-character string; fairseq's are short "
                                   "list expressions")
        try:
            tree = ast.parse(spec.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} is not a list expression") from None
        layers = value(tree.body)
    else:
        raise ConfigValueError(f"conv_feature_layers is {short_repr(spec)}; expected a list of (dim, kernel, stride)")
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ConfigValueError(f"conv_feature_layers {short_repr(spec)} is not a list of (dim, kernel, stride) tuples")
    if not 1 <= len(layers) <= _MAX_CONV_LAYERS:
        raise ConfigValueError(f"conv_feature_layers has {len(layers)} layers; expected 1 to {_MAX_CONV_LAYERS}")
    for index, layer in enumerate(layers):
        for (name, low, high), item in zip(_CONV_RANGES, layer):
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
                raise ConfigValueError(f"conv_feature_layers layer {index} {name} is {short_repr(item)}; expected an "
                                       f"integer from {low} to {high}")
    return [tuple(t) for t in layers]


def hubert_config_from_fairseq(model_cfg: dict[str, Any], **extra: Any) -> HubertConfig:
    """A transformers `HubertConfig` equivalent to a fairseq HuBERT model config (`cfg["model"]` or old `args`).

    `extractor_mode` "default" (one group norm in the first conv) -> `feat_extract_norm="group"`, "layer_norm" ->
    "layer"; `layer_norm_first` -> `do_stable_layer_norm`; `final_dim` (0 = embed dim) -> `classifier_proj_size`.
    `feature_grad_mult`, masking and the loss settings do not affect inference and are not carried over.
    """
    cfg = validate_model_config(model_cfg)
    if cfg["conv_pos_batch_norm"]:
        raise ConfigValueError("conv_pos_batch_norm: batch-norm positional convolutions are not supported")
    norms = {"default": "group", "layer_norm": "layer"}
    conv = cfg["conv_feature_layers"]
    hidden = int(cfg["encoder_embed_dim"])
    return HubertConfig(
        hidden_size=hidden,
        num_hidden_layers=int(cfg["encoder_layers"]),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        intermediate_size=int(cfg["encoder_ffn_embed_dim"]),
        hidden_act=cfg["activation_fn"],
        hidden_dropout=float(cfg["dropout"]),
        attention_dropout=float(cfg["attention_dropout"]),
        activation_dropout=float(cfg["activation_dropout"]),
        feat_proj_dropout=float(cfg["dropout_input"]),
        layerdrop=float(cfg["encoder_layerdrop"]),
        feat_extract_norm=norms[cfg["extractor_mode"]],
        feat_proj_layer_norm=True,  # fairseq always layer-norms the conv features before post_extract_proj
        conv_dim=[c[0] for c in conv],
        conv_kernel=[c[1] for c in conv],
        conv_stride=[c[2] for c in conv],
        conv_bias=bool(cfg["conv_bias"]),
        num_conv_pos_embeddings=int(cfg["conv_pos"]),
        num_conv_pos_embedding_groups=int(cfg["conv_pos_groups"]),
        do_stable_layer_norm=bool(cfg["layer_norm_first"]),
        classifier_proj_size=int(cfg["final_dim"]) or hidden,
        **extra,
    )
