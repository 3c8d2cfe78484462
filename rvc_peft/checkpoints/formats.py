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


def normalise_state_dict(state_dict: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """Legacy weight-norm names, no DDP `module.` prefix, tensors only (anything else is an error)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key.removeprefix("module.")] = value
    return to_legacy_keys(out)


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
        state = normalise_state_dict(obj["model"], path)
        if is_discriminator_state(state):
            raise CheckpointError(
                path, "this is a discriminator (D) checkpoint, not a synthesizer (G); load it with load_discriminator"
            )
        kind = "training" if "optimizer" in obj else "base"
        config = infer_config(state, path, sample_rate=sample_rate, version=version)
        meta = {k: obj[k] for k in ("iteration", "learning_rate") if k in obj}
        return RVCCheckpoint(kind, state, config, meta)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = normalise_state_dict(obj, path)
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
    state = normalise_state_dict(obj["weight"], path)
    values = list(obj["config"])
    if len(values) != 18:
        raise CheckpointError(path, f"'config' has {len(values)} entries; RVC exports have 18")
    if "emb_g.weight" not in state:
        raise CheckpointError(path, "missing 'emb_g.weight' (the speaker table): not an RVC synthesizer")
    # RVC trusts the table, not the config: merged or multi-speaker voices have another row count.
    values[15] = int(state["emb_g.weight"].shape[0])
    file_version = version or str(obj.get("version", "v1"))
    use_f0 = bool(int(obj.get("f0", 1)))
    if "enc_p.emb_phone.weight" in state:
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
    if kind == "applio" and isinstance(obj.get("speakers_id"), int):
        config.speaker_id = 0
    if isinstance(obj.get("embedder_model"), str):
        config.content_encoder = obj["embedder_model"]
    return RVCCheckpoint(kind, state, config, meta)


def _weight(state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor | None:
    return state.get(f"{prefix}.weight_v", state.get(f"{prefix}.weight"))


def infer_config(
    state: dict[str, torch.Tensor], path: str | Path, *, sample_rate: int | str | None = None,
    version: str | None = None,
) -> RVCConfig:
    """The synthesizer configuration implied by a config-less state dict (pretrained bases, `G_*.pth`).

    Channel counts and layer counts come from tensor shapes; the upsampling *rates* are not stored, so they
    come from the official preset whose kernel sizes match (rvc-reference §3.6).
    """
    try:
        width = int(state["enc_p.emb_phone.weight"].shape[1])
        hidden = int(state["enc_p.emb_phone.weight"].shape[0])
        inter = int(state["enc_p.proj.weight"].shape[0]) // 2
        filt = int(state["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0])
        ffn_kernel = int(state["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[2])
        k_channels = int(state["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[2])
        n_spk, gin = (int(s) for s in state["emb_g.weight"].shape)
        initial = int(state["dec.conv_pre.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(path, f"missing {err.args[0]!r}: not an RVC synthesizer state dict") from None
    shape_version = {256: "v1", 768: "v2"}.get(width)
    if shape_version is None:
        raise CheckpointError(path, f"content feature width {width}; RVC uses 256 (v1) or 768 (v2)")
    if version is not None and version != shape_version:
        raise CheckpointError(path, f"version={version} was requested but the weights are {shape_version}")
    n_layers = len({k.split(".")[3] for k in state if k.startswith("enc_p.encoder.attn_layers.")})
    n_stages = len({k.split(".")[2] for k in state if k.startswith("dec.ups.")})
    kernels = [int(_weight(state, f"dec.ups.{i}").shape[-1]) for i in range(n_stages)]
    res_kernels = [int(_weight(state, f"dec.resblocks.{j}.convs1.0").shape[-1]) for j in range(3)]
    use_f0 = "enc_p.emb_pitch.weight" in state
    spec = int(state["enc_q.pre.weight"].shape[1]) if "enc_q.pre.weight" in state else None

    # Kernel layouts identify the sample rate (v1 and v2 share 40k); prefer a preset of the same version.
    layouts: dict[int, RVCConfig] = {}
    for v, sr in preset_for_kernels(kernels):
        if sr not in layouts or v == shape_version:
            layouts[sr] = RVCConfig.from_preset(sr, v)
    if spec is not None:
        layouts = {sr: c for sr, c in layouts.items() if c.spec_channels == spec}
    if use_f0 and "dec.noise_convs.0.weight" in state:
        noise_kernel = int(state["dec.noise_convs.0.weight"].shape[-1])  # 2 * prod(upsample_rates[1:])
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
    return RVCConfig(
        version=shape_version, use_f0=use_f0, sampling_rate=sr, upsample_rates=preset.upsample_rates,
        upsample_kernel_sizes=kernels, filter_length=preset.filter_length, hop_length=preset.hop_length,
        n_mel_channels=preset.n_mel_channels, train_segment_size=preset.train_segment_size,
        spec_channels=spec or preset.spec_channels, inter_channels=inter, hidden_channels=hidden,
        filter_channels=filt, n_heads=hidden // k_channels, n_layers=n_layers, kernel_size=ffn_kernel,
        resblock_kernel_sizes=res_kernels, upsample_initial_channel=initial, spk_embed_dim=n_spk, gin_channels=gin,
        use_posterior_encoder=spec is not None,
    )
