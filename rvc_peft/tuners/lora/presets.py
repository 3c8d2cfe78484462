"""RVC target presets: names for groups of synthesizer layers, usable wherever `target_modules` is a string.

* `"generator"` — the decoder: `dec.conv_pre`, `dec.cond`, `dec.ups.*` (ConvTranspose1d), every resblock conv
  (dilated Conv1d), `dec.noise_convs.*` (pitch models) and `dec.conv_post`;
* `"flow"` — the normalising flow's coupling layers (`pre`, `post`, WaveNet `in_layers`, `res_skip_layers`,
  `cond_layer`);
* `"encoder"` — the content/text encoder `enc_p`: `emb_phone` (Linear), `emb_pitch` (Embedding), attention
  `conv_q/k/v/o`, FFN `conv_1/2` and `proj`;
* `"all"` = generator + flow + encoder. Presets combine with "+", e.g. `"generator+flow"`.

The posterior encoder `enc_q` (training only, dropped from exported voices) and the speaker table `emb_g` are never
targeted.
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_PRESET = "generator"

_PRESET_PATTERNS = {
    "generator": r"dec\.(?:conv_pre|cond|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]\.\d+|noise_convs\.\d+)",
    "flow": r"flow\.flows\.\d+\.(?:pre|post|enc\.cond_layer|enc\.in_layers\.\d+|enc\.res_skip_layers\.\d+)",
    "encoder": (
        r"enc_p\.(?:emb_phone|emb_pitch|proj|encoder\.attn_layers\.\d+\.conv_[qkvo]|encoder\.ffn_layers\.\d+\.conv_[12])"
    ),
}
_PRESET_ALIASES = {"all": ("generator", "flow", "encoder"), "decoder": ("generator",), "enc_p": ("encoder",)}
TARGET_PRESETS: tuple[str, ...] = ("generator", "flow", "encoder", "all", "generator+flow")


def _preset_parts(expression: str) -> list[str] | None:
    parts: list[str] = []
    for token in expression.replace(" ", "").lower().split("+"):
        if token in _PRESET_PATTERNS:
            parts.append(token)
        elif token in _PRESET_ALIASES:
            parts.extend(_PRESET_ALIASES[token])
        else:
            return None
    return parts or None


def is_target_preset(value: Any) -> bool:
    """True for a preset expression such as "generator", "all" or "generator+flow"."""
    return isinstance(value, str) and _preset_parts(value) is not None


def target_modules_for(preset: str) -> str:
    """The `target_modules` regex of a preset expression (module names may carry any prefix, e.g. a wrapper's).

    Raises `ValueError` listing the presets for an unknown name.
    """
    parts = _preset_parts(preset) if isinstance(preset, str) else None
    if parts is None:
        raise ValueError(f"unknown RVC target preset {preset!r}; choose from {', '.join(TARGET_PRESETS)} (or join with '+')")
    ordered = [name for name in _PRESET_PATTERNS if name in parts]
    return r"(?:.*\.)?(?:" + "|".join(_PRESET_PATTERNS[name] for name in ordered) + r")"


def preset_of(target_modules: Any) -> str | None:
    """The preset expression a `target_modules` regex was built from, or None (for model cards)."""
    if not isinstance(target_modules, str):
        return None
    for names in ("generator", "flow", "encoder", "generator+flow", "generator+encoder", "flow+encoder", "all"):
        if target_modules == target_modules_for(names):
            return names
    return None


def matches_preset(module_name: str, preset: str) -> bool:
    """True if `module_name` is targeted by `preset` (used by tests and tools)."""
    return re.fullmatch(target_modules_for(preset), module_name) is not None
