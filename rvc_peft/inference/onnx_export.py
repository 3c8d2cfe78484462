"""ONNX export of an RVC synthesizer (a base, or a base with a LoRA adapter merged in) for realtime clients.

Two graph layouts, both with a dynamic number of frames T (100 per second) and a dynamic batch size (clients feed 1):

* ``"webui"`` — RVC WebUI's own exporter (``infer/modules/onnx/export.py``, class ``SynthesizerTrnMsNSFsidM``):
  inputs ``phone [1, T, 256|768] float``, ``phone_lengths [1] int64``, ``pitch [1, T] int64`` (coarse ids 1..255),
  ``pitchf [1, T] float`` (F0 in Hz), ``ds [1] int64`` (speaker id), ``rnd [1, C, T] float`` (C = inter_channels,
  192 in every real model) -> ``audio [1, 1, T·hop]``. No-pitch models have no ``pitch``/``pitchf``. The prior noise
  is an input, so the caller controls it: feeding ``rnd`` = standard normal noise gives the same sampling as
  `RVCSynthesizer.infer` (the graph multiplies it by `noise_scale`, RVC's 0.66666 temperature; RVC's own exporter
  bakes in 1.0 — pass ``noise_scale=1.0`` to reproduce its graphs exactly).
* ``"vcclient"`` — VCClient's (w-okada/voice-changer ``export2onnx``): inputs ``feats, p_len, pitch, pitchf, sid``
  (no-pitch: ``feats, p_len, sid``) -> ``audio [1, 1, T·hop]``, opset 17, and the model metadata VCClient reads
  (``metadata_props["metadata"]``, a JSON object: application, version, modelType, samplingRate, f0, embChannels,
  embedder, embOutputLayer, useFinalProj). The prior noise is drawn inside the graph (``RandomNormalLike``), so
  two runs on the same inputs differ, as in VCClient's own exports; ``noise_scale=0`` gives a deterministic graph.

In both layouts pitch models also draw the NSF source's excitation noise inside the graph (RVC's ``SineGen`` adds
noise of amplitude 0.003 to voiced and 0.033 to unvoiced samples), again as RVC's and VCClient's exports do.
``source_noise=False`` leaves it out, which makes a ``"webui"`` graph fully deterministic: that is how the export is
checked against `RVCSynthesizer.infer` to 1e-4.

Weight norm is folded before export (the graph holds plain weights); an adapter is merged with PEFT's
``merge_and_unload`` first. ``half=True`` writes fp16 weights and compute, meant for GPU execution providers (it
also runs on onnxruntime's CPU provider, slower than fp32 there). A half "webui" graph keeps float32 inputs and
output (what RVC's ONNX runtime feeds; F0 reaches the sine source in float32); a half "vcclient" graph has fp16
float inputs and output, as VCClient binds them in fp16 mode.

Needs the ``onnx`` package (and ``onnxruntime`` to check or run the result); the graph is produced with PyTorch's
TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which writes opsets 13..20 natively (the
dynamo exporter writes 18+ only and would need ``onnxscript``).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import RVCSynthesizer, fold_weight_norm
from ..models.generator import SineGen
from ..models.synthesizer import PRIOR_NOISE_SCALE
from ..utils.files import atomic_write

logger = logging.getLogger(__name__)

LAYOUTS = ("webui", "vcclient")
DEFAULT_OPSET = 17
MIN_OPSET = 13
MAX_OPSET = 20  # the TorchScript exporter's newest; 13..20 all checked against torch (1e-6)
VCCLIENT_OPSET = 17
# VCClient reads metadata "version" "2" as "realtime-capable, audio [1, 1, N] unclipped" (it clips itself); "2.1"/
# "2.2" mean the graph clips internally and has extra skip_head/return_length inputs, which this layout lacks.
VCCLIENT_METADATA_VERSION = "2"
METADATA_KEY = "rvc_peft"  # our own metadata_props entry, present in both layouts


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ONNX export needs the `onnx` package: pip install onnx (and onnxruntime to run the result)"
        ) from error
    return onnx


class _QuietSineGen(SineGen):
    """`SineGen` without the excitation noise: sine · uv, so a pitch graph has no random op in its decoder."""

    def forward(self, f0: torch.Tensor, upp: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            step = f0.double() / self.sampling_rate
            frame_start = torch.remainder(torch.cumsum(step * upp, dim=1) - step * upp, 1.0)
            k = torch.arange(1, upp + 1, dtype=step.dtype, device=f0.device)
            phase = frame_start.unsqueeze(-1) + step.unsqueeze(-1) * k
            sine = (torch.sin(2 * math.pi * phase) * self.sine_amp).to(f0.dtype).reshape(f0.shape[0], -1, 1)
            uv = (f0 > self.voiced_threshold).to(f0.dtype).repeat_interleave(upp, dim=1).unsqueeze(-1)
        return sine * uv, uv


class SynthesizerGraph(nn.Module):
    """The conversion pass of an `RVCSynthesizer` with the prior noise made explicit, in an ONNX-friendly form.

    forward(*inputs) takes the layout's inputs in order (see `input_names`) and returns audio [B, 1, T·hop].
    The model must already have its weight norm folded (`prepare_for_export` does it on a copy); with
    `source_noise=False` its sine generator is swapped for a noise-free one in place.
    `float32_io`: float inputs and output stay float32 whatever the weights' dtype (casts at the graph's edges);
    F0 then reaches the NSF source in float32, where fp16 rounding of Hz would drift the sine's phase.
    """

    def __init__(self, model: RVCSynthesizer, layout: str, *, noise_scale: float = PRIOR_NOISE_SCALE,
                 source_noise: bool = True, float32_io: bool = False) -> None:
        super().__init__()
        self.float32_io = float32_io
        if layout not in LAYOUTS:
            raise ValueError(f"unknown ONNX layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.use_f0 = bool(model.config.use_f0)
        self.noise_scale = float(noise_scale)
        self.enc_p, self.flow, self.dec, self.emb_g = model.enc_p, model.flow, model.dec, model.emb_g
        if self.use_f0 and not source_noise:
            sine = self.dec.m_source.l_sin_gen
            self.dec.m_source.l_sin_gen = _QuietSineGen(sine.sampling_rate, sine.sine_amp, sine.noise_std,
                                                        sine.voiced_threshold)

    @property
    def input_names(self) -> list[str]:
        return input_names(self.layout, self.use_f0)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        names = self.input_names
        if len(inputs) != len(names):
            raise TypeError(f"expected inputs {names}, got {len(inputs)} tensors")
        named = dict(zip(names, inputs))
        if self.layout == "webui":
            phone, lengths, sid = named["phone"], named["phone_lengths"], named["ds"]
        else:
            phone, lengths, sid = named["feats"], named["p_len"], named["sid"]
        pitch, pitchf, noise = named.get("pitch"), named.get("pitchf"), named.get("rnd")
        dtype = self.emb_g.weight.dtype
        if self.float32_io and dtype != torch.float32:
            phone = phone.to(dtype)
            noise = noise.to(dtype) if noise is not None else None
        g = self.emb_g(sid).unsqueeze(-1)
        m_p, logs_p, x_mask = self.enc_p(phone, pitch, lengths)
        # Same operation order as `RVCSynthesizer.infer` (exp(logs)·noise·scale), so fp32 results match bit for bit
        # up to kernel differences.
        if self.layout == "webui":
            z_p = m_p + torch.exp(logs_p) * noise * self.noise_scale
        elif self.noise_scale:
            z_p = m_p + torch.exp(logs_p) * torch.randn_like(m_p) * self.noise_scale
        else:
            z_p = m_p  # a deterministic VCClient graph: no random op at all
        z = self.flow(z_p * x_mask, x_mask, g=g, reverse=True)
        audio = self.dec(z * x_mask, pitchf, g=g) if self.use_f0 else self.dec(z * x_mask, g=g)
        return audio.float() if self.float32_io else audio


def input_names(layout: str, use_f0: bool) -> list[str]:
    """The graph's input names, in order, for `layout` ("webui" or "vcclient") with or without pitch."""
    if layout == "webui":
        return ["phone", "phone_lengths", *(["pitch", "pitchf"] if use_f0 else []), "ds", "rnd"]
    if layout == "vcclient":
        return ["feats", "p_len", *(["pitch", "pitchf"] if use_f0 else []), "sid"]
    raise ValueError(f"unknown ONNX layout {layout!r}: choose one of {', '.join(LAYOUTS)}")


VCCLIENT_FIELDS = ("application", "version", "modelType", "samplingRate", "f0", "embChannels", "embedder",
                   "embOutputLayer", "useFinalProj")


def _check_vcclient_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - set(VCCLIENT_FIELDS)
    if unknown:
        raise ValueError(f"unknown VCClient metadata fields {sorted(unknown)}: known are {sorted(VCCLIENT_FIELDS)}")


def vcclient_metadata(config: Any, **overrides: Any) -> dict[str, Any]:
    """The JSON object VCClient reads from an RVC ONNX file's ``metadata`` entry, for a model with `config`.

    Content-encoder facts (embedder, output layer, final projection) are not stored in RVC models; the defaults
    are the official ones (v1: HuBERT-base layer 9 with final_proj, v2: layer 12 without) — override them for a
    voice trained on other features.
    """
    v1 = config.version == "v1"
    model_type = ("pyTorchRVC" if v1 else "pyTorchRVCv2") + ("" if config.use_f0 else "Nono")
    metadata: dict[str, Any] = {
        "application": "VC_CLIENT",
        "version": VCCLIENT_METADATA_VERSION,
        "modelType": model_type,
        "samplingRate": int(config.sampling_rate),
        "f0": bool(config.use_f0),
        "embChannels": int(config.content_dim),
        "embedder": "hubert_base",
        "embOutputLayer": 9 if v1 else 12,
        "useFinalProj": v1,
    }
    _check_vcclient_fields(overrides)
    metadata.update(overrides)
    return metadata


def prepare_for_export(
    model_or_path: RVCSynthesizer | nn.Module | str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    base_kwargs: Mapping[str, Any] | None = None,
    adapter_kwargs: Mapping[str, Any] | None = None,
) -> RVCSynthesizer:
    """A folded, eval-mode float32 copy of the synthesizer to export (the caller's model is left untouched).

    `model_or_path`: an `RVCSynthesizer`, a PEFT model wrapping one (its active adapters are merged), or anything
    `rvc_peft.load_synthesizer` reads (with `base_kwargs`). `adapter`: an adapter folder or Hub id merged in first
    (`PeftModel.from_pretrained(...).merge_and_unload()`, with `adapter_kwargs`).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        from ..checkpoints import load_synthesizer

        model: nn.Module = load_synthesizer(model_or_path, **dict(base_kwargs or {}))
    else:
        model = copy.deepcopy(model_or_path)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), **dict(adapter_kwargs or {})).merge_and_unload()
    elif hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    if not isinstance(model, RVCSynthesizer):
        raise TypeError(f"expected an RVCSynthesizer (or a PEFT model of one), got {type(model).__name__}")
    fold_weight_norm(model)
    if hasattr(model, "enc_q"):
        del model.enc_q  # training only; keeps the copy small
    return model.float().eval().requires_grad_(False)


def example_inputs(config: Any, layout: str, frames: int = 64, *, dtype: torch.dtype = torch.float32,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of the layout's graph for `frames` frames (random features, a voiced F0 contour, speaker 0)."""
    generator = torch.Generator().manual_seed(seed)
    phone = torch.randn(1, frames, config.content_dim, generator=generator).to(dtype)
    lengths = torch.tensor([frames], dtype=torch.long)
    f0 = (120.0 + 60.0 * torch.rand(1, frames, generator=generator))
    pitch = torch.randint(5, 255, (1, frames), generator=generator)
    sid = torch.zeros(1, dtype=torch.long)
    pitch_inputs = (pitch, f0.to(dtype)) if config.use_f0 else ()
    if layout == "webui":
        rnd = torch.randn(1, config.inter_channels, frames, generator=generator).to(dtype)
        return (phone, lengths, *pitch_inputs, sid, rnd)
    if layout == "vcclient":
        return (phone, lengths, *pitch_inputs, sid)
    raise ValueError(f"unknown ONNX layout {layout!r}: choose one of {', '.join(LAYOUTS)}")


def _dynamic_axes(layout: str, use_f0: bool) -> dict[str, dict[int, str]]:
    # Frames are dynamic as in RVC's and VCClient's exporters; the batch axis too (a superset: their clients feed
    # batch 1, and every item keeps its own length through phone_lengths / p_len).
    axes: dict[str, dict[int, str]] = {}
    for name in input_names(layout, use_f0):
        if name in ("phone", "feats", "pitch", "pitchf", "rnd"):
            axes[name] = {0: "batch", (2 if name == "rnd" else 1): "frames"}
        else:
            axes[name] = {0: "batch"}
    axes["audio"] = {0: "batch", 2: "samples"}
    return axes


def export_onnx(
    model_or_path: RVCSynthesizer | nn.Module | str | os.PathLike,
    out: str | os.PathLike,
    *,
    layout: str = "webui",
    adapter: str | os.PathLike | None = None,
    opset: int | None = None,
    half: bool = False,
    noise_scale: float = PRIOR_NOISE_SCALE,
    source_noise: bool = True,
    metadata: Mapping[str, Any] | None = None,
    example_frames: int = 16,
    base_kwargs: Mapping[str, Any] | None = None,
    adapter_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """Export an RVC synthesizer (optionally with `adapter` merged in) to an ONNX file in a realtime client's layout.

    `layout`: "webui" (RVC WebUI: phone, phone_lengths, pitch, pitchf, ds, rnd -> audio) or "vcclient" (feats,
    p_len, pitch, pitchf, sid -> audio, with VCClient's metadata; `metadata` overrides its fields, e.g.
    ``{"embedder": "contentvec"}``). `opset`: 13..20 for "webui" (default 17); "vcclient" is always 17.
    `half`: fp16 weights and compute for GPU providers (float32 I/O for "webui", fp16 for "vcclient").
    `noise_scale`: the prior sampling temperature baked into the graph (RVC's 0.66666; 0 removes the prior noise).
    `source_noise`: keep the NSF excitation noise (random in-graph, as RVC's exports); False makes it
    deterministic. `example_frames`: length of the tracing example (short: tracing runs the model, slowly in fp16 on
    a CPU; the graph accepts any length). The file is written atomically. Returns its path.
    """
    onnx = _require_onnx()
    if layout not in LAYOUTS:
        raise ValueError(f"unknown ONNX layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if opset is None:
        opset = VCCLIENT_OPSET if layout == "vcclient" else DEFAULT_OPSET
    if layout == "vcclient" and opset != VCCLIENT_OPSET:
        raise ValueError(f"the vcclient layout is opset {VCCLIENT_OPSET} (VCClient's exporter), got opset={opset}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if metadata and layout != "vcclient":
        raise ValueError("`metadata` overrides VCClient's metadata fields: use it with layout='vcclient'")
    _check_vcclient_fields(metadata or {})
    if example_frames < 2:
        raise ValueError(f"example_frames must be at least 2, got {example_frames}")
    if not (noise_scale >= 0 and math.isfinite(noise_scale)):
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale}")

    model = prepare_for_export(model_or_path, adapter=adapter, base_kwargs=base_kwargs,
                               adapter_kwargs=adapter_kwargs)
    config = model.config
    dtype = torch.float16 if half else torch.float32
    # RVC's ONNX runtime feeds float32 whatever the weights are, so a half "webui" graph keeps float32 inputs and
    # output; VCClient binds its float inputs (pitchf included) in the session's precision, so "vcclient" is fp16.
    float32_io = layout == "webui"
    graph = SynthesizerGraph(model, layout, noise_scale=noise_scale, source_noise=source_noise,
                             float32_io=float32_io).to(dtype).eval()
    inputs = example_inputs(config, layout, example_frames, dtype=torch.float32 if float32_io else dtype)
    names = graph.input_names

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Deliberate choices, not problems: the TorchScript exporter (opsets 13..20 natively; the dynamo exporter
        # writes 18+ only), and the flow's channel flips (Slice with step -1, left unfolded).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        warnings.filterwarnings("ignore", message="The feature will be removed.*")
        torch.onnx.export(
            graph, inputs, buffer, dynamo=False, opset_version=opset, input_names=names, output_names=["audio"],
            dynamic_axes=_dynamic_axes(layout, config.use_f0), do_constant_folding=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    facts = {
        "layout": layout, "version": config.version, "f0": bool(config.use_f0),
        "sampling_rate": int(config.sampling_rate), "hop_length": int(config.hop_length),
        "content_dim": int(config.content_dim), "inter_channels": int(config.inter_channels),
        "speakers": int(config.spk_embed_dim), "noise_scale": float(noise_scale), "source_noise": bool(source_noise),
        "half": bool(half), "adapter": str(adapter) if adapter is not None else None,
    }
    entries = {METADATA_KEY: json.dumps(facts)}
    if layout == "vcclient":
        entries["metadata"] = json.dumps(vcclient_metadata(config, **dict(metadata or {})))
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "rvc-peft"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    path = atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    logger.info("exported %s layout (opset %d, %s) to %s (%.1f MB)", layout, opset, "fp16" if half else "fp32",
                path, len(data) / 1e6)
    return path


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata entries of an exported file: {"rvc_peft": {...}, "metadata": {...} (vcclient)}, JSON-decoded."""
    onnx = _require_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError / OSError variants
        raise ValueError(f"{path}: not a readable ONNX model ({error})") from error
    out: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


class OnnxSynthesizer:
    """An exported graph (either layout) behind `RVCSynthesizer.infer`'s call, run by onnxruntime.

    ``infer(phone [B, T, E], phone_lengths [B], pitch [B, T], nsff0 [B, T], sid [B]) -> (audio [B, 1, T·hop],
    None, None)``, float32 torch tensors out; the first item is what `VoiceConverter` uses, so this is the piece an
    onnx backend swaps in for the synthesizer. The "webui" layout's prior noise is drawn here with numpy
    (``seed``), or given as ``rnd``; a "vcclient" graph draws its own. `providers` defaults to the CPU provider.
    """

    def __init__(self, path: str | os.PathLike, *, providers: list[Any] | None = None,
                 session_options: Any = None, seed: int | None = None) -> None:
        import onnxruntime

        facts = read_onnx_metadata(path).get(METADATA_KEY)
        if not isinstance(facts, dict) or facts.get("layout") not in LAYOUTS:
            raise ValueError(f"{path}: not an rvc-peft ONNX export (no '{METADATA_KEY}' metadata entry); export it "
                             "with rvc_peft.inference.onnx_export.export_onnx / `rvc-peft export-onnx`")
        self.path = Path(path)
        self.facts: dict[str, Any] = facts
        self.layout: str = facts["layout"]
        self.use_f0 = bool(facts["f0"])
        self.sampling_rate = int(facts["sampling_rate"])
        self.hop_length = int(facts["hop_length"])
        self.session = onnxruntime.InferenceSession(str(path), session_options,
                                                    providers=providers or ["CPUExecutionProvider"])
        self._types = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._rng = np.random.default_rng(seed)

    def infer(self, phone: torch.Tensor, phone_lengths: torch.Tensor, pitch: torch.Tensor | None = None,
              nsff0: torch.Tensor | None = None, sid: torch.Tensor | None = None, *,
              rnd: torch.Tensor | None = None) -> tuple[torch.Tensor, None, None]:
        if self.use_f0 and (pitch is None or nsff0 is None):
            raise ValueError(f"{self.path}: this model uses pitch: pass `pitch` (coarse ids) and `nsff0` (F0 in Hz)")
        batch, frames = phone.shape[0], phone.shape[1]
        if sid is None:
            sid = torch.zeros(batch, dtype=torch.long)
        names = input_names(self.layout, self.use_f0)
        values: list[Any] = [phone, phone_lengths, *([pitch, nsff0] if self.use_f0 else []), sid]
        if self.layout == "webui":
            if rnd is None:
                rnd = torch.from_numpy(self._rng.standard_normal(
                    (batch, int(self.facts["inter_channels"]), frames), dtype=np.float32))
            values.append(rnd)
        feed = {name: np.ascontiguousarray(value.detach().cpu().numpy(), dtype=self._types[name])
                for name, value in zip(names, values)}
        audio = self.session.run(["audio"], feed)[0]
        return torch.from_numpy(audio.astype(np.float32, copy=False)), None, None
