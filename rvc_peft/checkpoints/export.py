"""Writing RVC's own file formats: exported voices (WebUI/Applio), pretrained-base and training checkpoints."""

from __future__ import annotations

import datetime
import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import RVCConfig, RVCSynthesizer
from ..models.weight_norm import LEGACY_SUFFIXES, split_weight, to_legacy_keys
from ..utils.files import atomic_write


def rvc_state_dict(model: RVCSynthesizer, *, include_posterior_encoder: bool = True) -> dict[str, torch.Tensor]:
    """The model's weights under RVC's key names, weight norm in the legacy `weight_g`/`weight_v` spelling.

    Layers whose weight norm was folded away (or merged into by LoRA) get (g, v) re-derived from their plain
    weight, so the result loads into RVC's weight-normed classes unchanged.
    """
    model = _unwrap(model)
    with torch.device("meta"):  # only the key names are needed
        reference = RVCSynthesizer(_copy_config(model.config, include_posterior_encoder))
    wanted = to_legacy_keys(reference.state_dict())
    have = to_legacy_keys({k: v.detach() for k, v in model.state_dict().items()})
    out: dict[str, torch.Tensor] = {}
    for key in wanted:
        if key in have:
            out[key] = have[key]
        elif key.endswith(LEGACY_SUFFIXES):
            stem = key[: -len(".weight_g")]
            if f"{stem}.weight" not in have:
                raise ValueError(f"the model has no weight for {stem}; is it an RVC synthesizer?")
            g, v = split_weight(have[f"{stem}.weight"])
            out[key] = g if key.endswith(".weight_g") else v
        else:
            raise ValueError(f"the model has no tensor {key!r}; is it an RVC synthesizer of this configuration?")
    return out


def export_rvc(
    model: RVCSynthesizer,
    path: str | os.PathLike,
    *,
    info: str | None = None,
    flavor: str = "webui",
    speaker_id: int | None = None,
) -> Path:
    """Write `model` as an RVC exported voice (`assets/weights/<name>.pth`) that RVC WebUI and Applio load.

    As RVC's `savee`: fp16 CPU tensors, `enc_q` dropped, legacy weight-norm names, the 18-entry `config` list,
    `f0`, `version`, `sr` and `info`. `info=None` keeps the info string of the RVC voice the model was loaded
    from (`config.rvc_info`; empty if none). `flavor="applio"` writes Applio's variant (int `sr`, bool `f0`,
    its metadata keys; `info` only when given: Applio's own files have none and it ignores the key, so the text
    is kept for the user without changing what Applio loads); its `speakers_id` is derived from `speaker_id`
    (default `config.speaker_id`), the `emb_g` row the voice speaks with. The file is written to a temporary name
    and renamed, never half-written.
    """
    if flavor not in ("webui", "applio"):
        raise ValueError(f"flavor must be 'webui' or 'applio', not {flavor!r}")
    model = _unwrap(model)
    config: RVCConfig = model.config
    # RVC's own loaders map to the CPU, but a file holding CUDA tensors fails for anyone without that GPU.
    weights = OrderedDict(
        (k, v.to(device="cpu", dtype=torch.float16))
        for k, v in rvc_state_dict(model, include_posterior_encoder=False).items()
    )
    values = config.to_rvc_list()
    n_speakers = int(weights["emb_g.weight"].shape[0])
    values[15] = n_speakers
    ckpt: OrderedDict[str, Any] = OrderedDict(weight=weights, config=values)
    if flavor == "webui":
        text = info if info is not None else getattr(config, "rvc_info", "")
        ckpt.update(info=text, sr=config.sample_rate_name, f0=int(config.use_f0), version=config.version)
    else:
        row = int(speaker_id if speaker_id is not None else config.speaker_id)
        if not 0 <= row < n_speakers:
            raise ValueError(f"speaker_id {row} is not a row of this model's speaker table (0..{n_speakers - 1})")
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in weights.values())).hexdigest()
        ckpt.update(
            sr=config.sampling_rate, f0=bool(config.use_f0), version=config.version,
            creation_date=datetime.datetime.now(datetime.timezone.utc).isoformat(), model_hash=digest,
            model_name=Path(path).stem, embedder_model=config.content_encoder, vocoder="HiFi-GAN",
            # Applio's speakers_id is a speaker *count* (its UI offers rows range(speakers_id); Applio writes the
            # number of speakers in the dataset, 1 for a usual voice). row + 1 is the smallest count that still
            # offers the voice's own row: a voice fine-tuned as speaker k stays usable as k, and the untrained
            # rows above it are not offered (the full table, 109 rows, would list voices this file is not).
            speakers_id=row + 1,
        )
        if info is not None:  # an explicit text is never dropped silently (`rvc-peft export --flavor applio --info`)
            ckpt["info"] = info
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    return Path(path)


def save_rvc_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    kind: str = "base",
    optimizer: torch.optim.Optimizer | None = None,
    iteration: int = 1,
    learning_rate: float = 1e-4,
) -> Path:
    """Write a synthesizer or discriminator the way RVC's training does.

    kind="base": `{"model": fp16 state}` like the released `f0G40k.pth`/`f0D40k.pth`;
    kind="training": `{"model": fp32 state, "iteration", "optimizer", "learning_rate"}` like `G_*.pth`/`D_*.pth`.
    """
    if kind not in ("base", "training"):
        raise ValueError(f"kind must be 'base' or 'training', not {kind!r}")
    model = _unwrap(model)
    state = rvc_state_dict(model) if isinstance(model, RVCSynthesizer) else to_legacy_keys(
        {k: v.detach() for k, v in model.state_dict().items()}
    )
    if kind == "base":
        ckpt: dict[str, Any] = {"model": OrderedDict((k, v.to("cpu", torch.float16)) for k, v in state.items())}
    else:
        ckpt = {
            "model": OrderedDict((k, v.to("cpu", torch.float32)) for k, v in state.items()),
            "iteration": iteration,
            # optimizer.load_state_dict moves the moments back to the parameters' device on resume
            "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else {},
            "learning_rate": learning_rate,
        }
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    return Path(path)


def _to_cpu(value: Any) -> Any:
    """`value` with every tensor inside (dicts, lists, tuples) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return value


def _unwrap(model: nn.Module) -> nn.Module:
    """The RVC model inside DDP / accelerate wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def _copy_config(config: RVCConfig, use_posterior_encoder: bool) -> RVCConfig:
    values = config.to_dict()
    values["use_posterior_encoder"] = use_posterior_encoder and config.use_posterior_encoder
    return RVCConfig(**{k: v for k, v in values.items() if k not in ("model_type", "transformers_version")})
