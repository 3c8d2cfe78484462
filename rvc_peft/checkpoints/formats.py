"""What kind of RVC file a loaded object is, and the synthesizer configuration it implies.

Kinds (rvc-reference §3): a pretrained base `{"model": G}` (fp16, no config), a training checkpoint
`G_*.pth` `{"model", "iteration", "optimizer", "learning_rate"}`, an exported voice `{"weight", "config",
"info", "sr", "f0", "version"}` and Applio's export of the same with extra metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.config import RVCConfig, parse_sample_rate, preset_for_kernels, sample_rate_name
from ..models.weight_norm import to_legacy_keys
from .safe_load import CheckpointError

_DISCRIMINATOR_KEY = re.compile(r"^discriminators\.(\d+)\.")


@dataclass
class RVCCheckpoint:
    """A parsed RVC file: `kind` is "base", "training", "exported" or "applio"; keys use the legacy WN spelling."""

    kind: str
    state_dict: dict[str, torch.Tensor]
    config: RVCConfig
    metadata: dict[str, Any] = field(default_factory=dict)


def normalize_state_dict(state_dict: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """Legacy weight-norm names, no DDP `module.` prefix, tensors only (anything else is an error)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(path, f"state dict key {_short(key)} is not a parameter name (a string)")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key.removeprefix("module.")] = value
    return to_legacy_keys(out)


def _short(value: Any) -> str:
    """repr of a value from a file, cut so that a huge one cannot flood the message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_discriminator_state(state_dict: dict[str, Any]) -> bool:
    return any(_DISCRIMINATOR_KEY.match(k) for k in state_dict)


def discriminator_version(state_dict: dict[str, Any], path: str | Path) -> str:
    """v1 has 7 sub-discriminators (scale + 6 periods), v2 has 9."""
    count = len({int(m.group(1)) for k in state_dict if (m := _DISCRIMINATOR_KEY.match(k))})
    versions = {7: "v1", 9: "v2"}
    if count not in versions:
        raise CheckpointError(path, f"discriminator with {count} sub-discriminators; RVC's have 7 (v1) or 9 (v2)")
    return versions[count]


def parse_checkpoint(
    obj: Any, path: str | Path, *, sample_rate: int | str | None = None, version: str | None = None
) -> RVCCheckpoint:
    """Recognise an RVC synthesizer file and work out its `RVCConfig`."""
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"unknown format: the file holds a {type(obj).__name__}, not an RVC dict")
    if "weight" in obj and "config" in obj:
        return _parse_exported(obj, path, sample_rate=sample_rate, version=version)
    if "model" in obj and isinstance(obj["model"], dict):
        state = normalize_state_dict(obj["model"], path)
        if is_discriminator_state(state):
            raise CheckpointError(
                path, "this is a discriminator (D) checkpoint, not a synthesizer (G); load it with load_discriminator"
            )
        kind = "training" if "optimizer" in obj else "base"
        config = infer_config(state, path, sample_rate=sample_rate, version=version)
        meta = {k: obj[k] for k in ("iteration", "learning_rate") if k in obj}
        return RVCCheckpoint(kind, state, config, meta)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = normalize_state_dict(obj, path)
        if is_discriminator_state(state):
            raise CheckpointError(path, "this is a bare discriminator state dict; load it with load_discriminator")
        if "enc_p.emb_phone.weight" in state:
            return RVCCheckpoint("state_dict", state, infer_config(state, path, sample_rate=sample_rate, version=version))
    keys = ", ".join(sorted(map(str, obj))[:8])
    raise CheckpointError(
        path, f"unknown format: expected an RVC model with 'weight'+'config' or 'model' entries, found keys [{keys}]"
    )


def _parse_exported(
    obj: dict[str, Any], path: str | Path, *, sample_rate: int | str | None, version: str | None
) -> RVCCheckpoint:
    vocoder = obj.get("vocoder", "HiFi-GAN")
    if vocoder != "HiFi-GAN":
        raise CheckpointError(
            path, f"uses Applio's {vocoder!r} vocoder; only the HiFi-GAN vocoder of RVC WebUI/Applio is supported"
        )
    if not isinstance(obj["weight"], dict):
        raise CheckpointError(path, "'weight' is not a state dict")
    state = normalize_state_dict(obj["weight"], path)
    if not isinstance(obj["config"], (list, tuple)):
        raise CheckpointError(path, f"'config' is {_short(obj['config'])}; RVC exports hold a list of 18 entries")
    values = list(obj["config"])
    if len(values) != 18:
        raise CheckpointError(path, f"'config' has {len(values)} entries; RVC exports have 18")
    # RVC defaults: a missing f0 means a pitch model, a missing version a v1-era file (rvc-reference §3.4).
    f0 = obj.get("f0", 1)
    if not (isinstance(f0, int) and f0 in (0, 1)):  # bool is an int: Applio's True/False pass
        raise CheckpointError(path, f"'f0' is {_short(f0)}; RVC writes 0/1 (WebUI) or False/True (Applio)")
    use_f0 = bool(f0)
    file_version = obj.get("version", "v1")
    if not (isinstance(file_version, str) and file_version in ("v1", "v2")):
        raise CheckpointError(path, f"'version' is {_short(file_version)}; RVC WebUI/Applio voices are 'v1' or 'v2'")
    if "emb_g.weight" not in state:
        raise CheckpointError(path, "missing 'emb_g.weight' (the speaker table): not an RVC synthesizer")
    # RVC trusts the table, not the config: merged or multi-speaker voices have another row count.
    n_speakers = _dim(state, "emb_g.weight", 0, path)
    _dim(state, "emb_g.weight", 1, path)  # a [speakers, channels] table
    values[15] = n_speakers
    file_version = version or file_version
    if "enc_p.emb_phone.weight" in state and state["enc_p.emb_phone.weight"].dim() == 2:
        width = int(state["enc_p.emb_phone.weight"].shape[1])
        shape_version = {256: "v1", 768: "v2"}.get(width)
        if shape_version and shape_version != file_version:
            if version is not None:
                raise CheckpointError(path, f"version={version} was requested but the weights are {shape_version}")
            file_version = shape_version  # the shapes decide; the field is missing in old v1 files
    use_f0 = use_f0 and "enc_p.emb_pitch.weight" in state
    try:
        config = RVCConfig.from_rvc_list(values, version=file_version, use_f0=use_f0, use_posterior_encoder=False)
    except ValueError as err:
        raise CheckpointError(path, f"invalid 'config' list: {err}") from None
    if sample_rate is not None and parse_sample_rate(sample_rate) != config.sampling_rate:
        raise CheckpointError(
            path, f"sample_rate={sample_rate} was requested but the file is a {config.sample_rate_name} model"
        )
    kind = "applio" if any(k in obj for k in ("vocoder", "speakers_id", "model_hash", "embedder_model")) else "exported"
    meta = {k: v for k, v in obj.items() if k not in ("weight", "config")}
    speakers = obj.get("speakers_id")
    if isinstance(speakers, int) and not isinstance(speakers, bool) and speakers >= 1:
        # Applio's `speakers_id` is a speaker *count*: its UI offers rows range(speakers_id). export_rvc writes
        # speaker_id + 1, so the voice's own row is the last one offered; reading it back as that row round-trips
        # our exports and gives row 0 for Applio's usual single-speaker files. (Other values are left alone, as
        # Applio's UI falls back to row 0 for them.)
        config.speaker_id = min(speakers, n_speakers) - 1
    if isinstance(obj.get("embedder_model"), str):
        config.content_encoder = obj["embedder_model"]
    return RVCCheckpoint(kind, state, config, meta)


def _dim(state: dict[str, torch.Tensor], key: str, axis: int, path: str | Path, *alternatives: str) -> int:
    """Size of `axis` of `key` (or the first present of `alternatives`), or a CheckpointError naming the key."""
    for name in (key, *alternatives):
        if name in state:
            tensor = state[name]
            if tensor.dim() <= axis:
                raise CheckpointError(path, f"{name} has shape {list(tensor.shape)}: not an RVC synthesizer")
            return int(tensor.shape[axis])
    raise CheckpointError(path, f"missing {key!r}: not an RVC synthesizer state dict")


def infer_config(
    state: dict[str, torch.Tensor], path: str | Path, *, sample_rate: int | str | None = None,
    version: str | None = None,
) -> RVCConfig:
    """The synthesizer configuration implied by a config-less state dict (pretrained bases, `G_*.pth`).

    Channel counts and layer counts come from tensor shapes; the upsampling *rates* are not stored, so they
    come from the official preset whose kernel sizes match (rvc-reference §3.6).
    """
    width = _dim(state, "enc_p.emb_phone.weight", 1, path)
    hidden = _dim(state, "enc_p.emb_phone.weight", 0, path)
    inter = _dim(state, "enc_p.proj.weight", 0, path) // 2
    filt = _dim(state, "enc_p.encoder.ffn_layers.0.conv_1.weight", 0, path)
    ffn_kernel = _dim(state, "enc_p.encoder.ffn_layers.0.conv_1.weight", 2, path)
    k_channels = _dim(state, "enc_p.encoder.attn_layers.0.emb_rel_k", 2, path)
    n_spk, gin = _dim(state, "emb_g.weight", 0, path), _dim(state, "emb_g.weight", 1, path)
    initial = _dim(state, "dec.conv_pre.weight", 0, path)
    shape_version = {256: "v1", 768: "v2"}.get(width)
    if shape_version is None:
        raise CheckpointError(path, f"content feature width {width}; RVC uses 256 (v1) or 768 (v2)")
    if version is not None and version != shape_version:
        raise CheckpointError(path, f"version={version} was requested but the weights are {shape_version}")
    n_layers = len({k.split(".")[3] for k in state if k.startswith("enc_p.encoder.attn_layers.")})
    n_stages = len({k.split(".")[2] for k in state if k.startswith("dec.ups.")})
    kernels = [_dim(state, f"dec.ups.{i}.weight_v", 2, path, f"dec.ups.{i}.weight") for i in range(n_stages)]
    res_kernels = [
        _dim(state, f"dec.resblocks.{j}.convs1.0.weight_v", 2, path, f"dec.resblocks.{j}.convs1.0.weight")
        for j in range(3)
    ]
    use_f0 = "enc_p.emb_pitch.weight" in state
    spec = _dim(state, "enc_q.pre.weight", 1, path) if "enc_q.pre.weight" in state else None

    # Kernel layouts identify the sample rate (v1 and v2 share 40k); prefer a preset of the same version.
    layouts: dict[int, RVCConfig] = {}
    for v, sr in preset_for_kernels(kernels):
        if sr not in layouts or v == shape_version:
            layouts[sr] = RVCConfig.from_preset(sr, v)
    if spec is not None:
        layouts = {sr: c for sr, c in layouts.items() if c.spec_channels == spec}
    if use_f0 and "dec.noise_convs.0.weight" in state:
        noise_kernel = _dim(state, "dec.noise_convs.0.weight", 2, path)  # 2 * prod(upsample_rates[1:])
        layouts = {sr: c for sr, c in layouts.items() if 2 * c.hop_length // c.upsample_rates[0] == noise_kernel}
    if sample_rate is not None:
        wanted = parse_sample_rate(sample_rate)
        if layouts and wanted not in layouts:
            found = " or ".join(sample_rate_name(sr) for sr in sorted(layouts))
            raise CheckpointError(path, f"sample_rate={sample_rate} was requested but the shapes fit {found}")
        layouts = {sr: c for sr, c in layouts.items() if sr == wanted}
    if not layouts:
        raise CheckpointError(
            path, f"upsample kernels {kernels} match no RVC configuration (v1/v2 at 32k, 40k, 48k; Applio 24k)"
        )
    if len(layouts) > 1:
        names = " or ".join(sample_rate_name(sr) for sr in sorted(layouts))
        raise CheckpointError(path, f"the weights fit {names}; pass sample_rate= to say which")
    (sr, preset), = layouts.items()
    if k_channels == 0 or hidden % k_channels:
        raise CheckpointError(path, f"attention width {k_channels} does not divide the hidden width {hidden}")
    return RVCConfig(
        version=shape_version, use_f0=use_f0, sampling_rate=sr, upsample_rates=preset.upsample_rates,
        upsample_kernel_sizes=kernels, filter_length=preset.filter_length, hop_length=preset.hop_length,
        n_mel_channels=preset.n_mel_channels, train_segment_size=preset.train_segment_size,
        spec_channels=spec or preset.spec_channels, inter_channels=inter, hidden_channels=hidden,
        filter_channels=filt, n_heads=hidden // k_channels, n_layers=n_layers, kernel_size=ffn_kernel,
        resblock_kernel_sizes=res_kernels, upsample_initial_channel=initial, spk_embed_dim=n_spk, gin_channels=gin,
        use_posterior_encoder=spec is not None,
    )
