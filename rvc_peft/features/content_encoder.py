"""Content encoders (HuBERT / ContentVec) producing RVC's content features, without fairseq.

RVC feeds its synthesizer with features of a HuBERT-architecture model: its `hubert_base.pt` is really
ContentVec ("legacy", 500 classes), not Facebook's HuBERT-base -- the two share the architecture and file layout,
but RVC voices trained on ContentVec features degrade with real HuBERT features. Per RVC version:

* v1: output of transformer layer 9 (fairseq `output_layer=9`) through `final_proj` -> 256-d;
* v2: output of transformer layer 12 (`output_layer=12`) -> 768-d.

Frames come at 50 per second: `F = (L - 400) // 320 + 1` for `L` samples at 16 kHz (no padding, RVC's all-False
padding mask). The waveform is layer-normed first only when the checkpoint says so (`task.normalize` in fairseq,
`do_normalize` in a transformers feature-extractor config); RVC's ContentVec says no.

`load_content_encoder` reads a transformers folder or Hub id (RVC main's / Applio's `HubertModelWithFinalProj`
layout: `config.json` + weights with `final_proj.weight/bias` beside the HubertModel names) or a fairseq checkpoint,
converted by `rvc_peft.features.fairseq_checkpoint` without importing fairseq or running pickle code.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import HubertConfig, HubertModel

from ..utils.files import atomic_write
from .fairseq_checkpoint import FairseqCheckpointError, convert_hubert_checkpoint
from .lab_encoder import MFCCContentEncoder, is_lab_encoder_folder, load_lab_encoder

# FairseqCheckpointError is re-exported so callers can catch both error types from this module.
__all__ = ["OUTPUT_LAYERS", "ContentEncoder", "ContentEncoderError", "FairseqCheckpointError", "load_content_encoder"]

logger = logging.getLogger(__name__)

OUTPUT_LAYERS = {"v1": 9, "v2": 12}  # fairseq `output_layer` per RVC version (1-based transformer layer)
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_HEAD_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights")  # task heads of HubertFor* models
_UNUSED_AT_INFERENCE = ("masked_spec_embed",)  # may be absent from a checkpoint; zero-filled


class ContentEncoderError(ValueError):
    """A content encoder cannot be found, read or used as asked (the message names the file or Hub id)."""


class ContentEncoder(nn.Module):
    """A transformers `HubertModel` plus `final_proj`, computing RVC's v1/v2 content features.

    Attributes: `hubert` (HubertModel), `final_proj` (nn.Linear or None), `version` ("v1"|"v2"), `output_dim`
    (256 for v1 / 768 for v2 with ContentVec-base), `kind` ("contentvec"|"hubert"), `name_or_path`, `normalize`.
    The model is frozen (eval mode, no gradients) after loading; call `.train()`/`requires_grad_()` to change that.
    """

    def __init__(
        self,
        hubert: HubertModel,
        final_proj: nn.Linear | None,
        version: str = "v2",
        *,
        kind: str = "hubert",
        normalize: bool = False,
        name_or_path: str = "",
    ) -> None:
        super().__init__()
        if version not in OUTPUT_LAYERS:
            raise ContentEncoderError(f"unknown RVC version {version!r}; expected 'v1' or 'v2'")
        if hubert.config.num_hidden_layers < OUTPUT_LAYERS[version]:
            raise ContentEncoderError(f"{name_or_path}: {version} features come from transformer layer "
                                      f"{OUTPUT_LAYERS[version]}, but the model has {hubert.config.num_hidden_layers}")
        if final_proj is not None and final_proj.in_features != hubert.config.hidden_size:
            raise ContentEncoderError(f"{name_or_path}: final_proj takes {final_proj.in_features} inputs, but the "
                                      f"model width is {hubert.config.hidden_size}")
        if version == "v1" and final_proj is None:
            raise ContentEncoderError(f"{name_or_path}: v1 features are final_proj(layer 9), but this model has no "
                                      "final_proj weights (use a ContentVec checkpoint such as RVC's hubert_base.pt, "
                                      "or version='v2')")
        self.hubert = hubert
        self.final_proj = final_proj
        self.version = version
        self.kind = kind
        self.normalize = bool(normalize)
        self.name_or_path = name_or_path
        # the local file or folder `load_content_encoder` read (a Hub id resolved to the cache); None otherwise
        self.weights_path: str | None = None

    @property
    def output_layer(self) -> int:
        return OUTPUT_LAYERS[self.version]

    @property
    def output_dim(self) -> int:
        return self.final_proj.out_features if self.version == "v1" else self.hubert.config.hidden_size

    @staticmethod
    def num_frames(num_samples: int) -> int:
        """Feature frames for `num_samples` at 16 kHz with HuBERT-base's conv stack: `(L - 400) // 320 + 1`."""
        return max(0, (num_samples - 400) // 320 + 1)

    def hidden_state(self, wav16k: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of transformer layer `layer` (1-based) like fairseq's `extract_features(output_layer=layer)`.

        wav16k [B, L] -> [B, F, H]. Only the first `layer` blocks run. In the pre-norm (`do_stable_layer_norm`)
        variant the encoder's final layer norm is not applied, as in fairseq when `output_layer` is given.
        """
        model = self.hubert
        if self.normalize:
            wav16k = F.layer_norm(wav16k, wav16k.shape[-1:])
        x = model.feature_extractor(wav16k).transpose(1, 2)
        x = model.feature_projection(x)
        x = x + model.encoder.pos_conv_embed(x)
        if not model.config.do_stable_layer_norm:
            x = model.encoder.layer_norm(x)
        x = model.encoder.dropout(x)
        for block in model.encoder.layers[:layer]:
            x = block(x, attention_mask=None)
            if isinstance(x, tuple):  # transformers < 5.8 returns (hidden_states, attention weights...)
                x = x[0]
        return x

    def forward(self, wav16k: torch.Tensor) -> torch.Tensor:
        """wav16k [B, L] float at 16 kHz -> content features [B, F, E], F = (L - 400) // 320 + 1 (50 fps)."""
        if wav16k.dim() != 2:
            raise ContentEncoderError(f"expected a [batch, samples] waveform, got shape {tuple(wav16k.shape)}")
        if wav16k.shape[-1] < 400:
            raise ContentEncoderError(f"audio too short: {wav16k.shape[-1]} samples; at least 400 (25 ms at "
                                      "16 kHz) are needed for one feature frame")
        feats = self.hidden_state(wav16k, self.output_layer)
        return self.final_proj(feats) if self.version == "v1" else feats

    @torch.inference_mode()
    def extract(self, wav16k: np.ndarray | torch.Tensor) -> np.ndarray:
        """One clip [L] at 16 kHz (numpy or tensor) -> float32 numpy features [F, E]."""
        param = next(self.parameters())
        wav = torch.as_tensor(np.asarray(wav16k) if not torch.is_tensor(wav16k) else wav16k)
        if wav.dim() != 1:
            raise ContentEncoderError(f"extract() takes one mono clip [samples], got shape {tuple(wav.shape)}")
        return self(wav.to(device=param.device, dtype=param.dtype)[None])[0].float().cpu().numpy()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write a transformers folder: `config.json`, `model.safetensors` (HubertModel names + `final_proj.*`,
        the layout of RVC main's / Applio's `HubertModelWithFinalProj`) and `preprocessor_config.json`.
        Each file is written atomically; `load_content_encoder(folder)` reads it back."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = HubertConfig.from_dict(self.hubert.config.to_dict())
        config.architectures = ["HubertModelWithFinalProj"]
        config.content_encoder_kind = self.kind
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.hubert.state_dict().items()}
        if self.final_proj is not None:
            config.classifier_proj_size = self.final_proj.out_features
            tensors.update({f"final_proj.{k}": v.detach().contiguous().cpu()
                            for k, v in self.final_proj.state_dict().items()})
        preprocessor = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                        "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": self.normalize,
                        "return_attention_mask": False, "padding_side": "right"}
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        atomic_write(folder / "config.json", lambda tmp: tmp.write_text(config.to_json_string(), encoding="utf-8"))
        atomic_write(folder / "preprocessor_config.json",
                     lambda tmp: tmp.write_text(json.dumps(preprocessor, indent=2) + "\n", encoding="utf-8"))


# --- building a model from a state dict --------------------------------------------------------------------------

def _build_hubert(config: HubertConfig, state_dict: dict[str, torch.Tensor], source: str) -> HubertModel:
    # Built on the meta device and filled with `assign=True`: the checkpoint's tensors become the parameters,
    # so no randomly initialised copy is ever allocated (peak memory stays about one model).
    with torch.device("meta"):
        model = HubertModel(config)
    expected = set(model.state_dict())
    for key in list(state_dict):  # weight-norm spelling: legacy weight_g/weight_v <-> parametrizations.original0/1
        alt = (key.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"))
        if alt != key and alt in expected and key not in expected:
            state_dict[alt] = state_dict.pop(key)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches between config and weights
        raise ContentEncoderError(f"{source}: weights do not fit the model config ({str(exc).strip()[:500]})") from exc
    for key in missing:
        if key not in _UNUSED_AT_INFERENCE:
            raise ContentEncoderError(f"{source}: weights lack {len(missing)} HubertModel parameters, e.g. "
                                      f"{', '.join(sorted(missing)[:5])}")
        module_name, _, attr = key.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        setattr(module, attr, nn.Parameter(torch.zeros(model.get_parameter(key).shape)))
    if unexpected:
        raise ContentEncoderError(f"{source}: weights have {len(unexpected)} parameters HubertModel does not know, "
                                  f"e.g. {', '.join(sorted(unexpected)[:5])}")
    return model


def _final_proj(weights: dict[str, torch.Tensor]) -> nn.Linear | None:
    if "weight" not in weights:
        return None
    out_dim, in_dim = weights["weight"].shape
    layer = nn.Linear(in_dim, out_dim, bias="bias" in weights, device="meta")
    layer.load_state_dict(weights, assign=True)
    return layer


def _read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    """One weight file's tensors; damaged files (CRC, truncation), pickles that would run code and NaN/inf/absurd or
    integer weights are a `ContentEncoderError` naming the file (never torch's "weights_only=False" advice)."""
    from ..checkpoints.safe_load import CheckpointError, check_weights, read_pth, read_safetensors

    try:
        state = read_safetensors(file) if file.suffix == ".safetensors" else read_pth(file, mmap=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(file, "not a state dict of tensors")
        check_weights(state, file)
    except CheckpointError as exc:
        raise ContentEncoderError(f"{file}: cannot read weights ({exc.reason})") from None
    return state


# config.json names -> the fairseq names whose bounds `validate_model_config` enforces (the same model either way)
_SIZE_KEYS = {"num_hidden_layers": "encoder_layers", "hidden_size": "encoder_embed_dim",
              "intermediate_size": "encoder_ffn_embed_dim", "num_attention_heads": "encoder_attention_heads",
              "num_conv_pos_embeddings": "conv_pos", "num_conv_pos_embedding_groups": "conv_pos_groups"}


def _check_sizes(raw: dict, config_file: Path) -> None:
    """Bound every size in a transformers HuBERT config.json before it builds a model (see the fairseq checks)."""
    from .fairseq_config import ConfigValueError, validate_model_config

    sizes = {fairseq: raw[key] for key, fairseq in _SIZE_KEYS.items() if key in raw}
    conv = [raw.get(key, default) for key, default in
            (("conv_dim", [512] * 7), ("conv_kernel", [10, 3, 3, 3, 3, 2, 2]), ("conv_stride", [5, 2, 2, 2, 2, 2, 2]))]
    try:
        if not all(isinstance(c, list) for c in conv) or len({len(c) for c in conv}) != 1:
            raise ConfigValueError("conv_dim, conv_kernel and conv_stride must be lists of the same length")
        validate_model_config({**sizes, "conv_feature_layers": [list(t) for t in zip(*conv)]})
    except ConfigValueError as exc:
        message = str(exc)
        for key, fairseq in _SIZE_KEYS.items():
            message = message.replace(fairseq, key)
        raise ContentEncoderError(f"{config_file}: {message.replace('conv_feature_layers', 'conv_dim/kernel/stride')}"
                                  ) from None


def _load_transformers_folder(folder: Path) -> tuple[HubertConfig, dict, dict, bool, str | None]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ContentEncoderError(f"{folder}: no config.json (expected a transformers HuBERT/ContentVec folder)")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ContentEncoderError(f"{config_file}: holds a JSON {type(raw).__name__}, not an object")
        if raw.get("model_type") != "hubert":
            raise ContentEncoderError(f"{config_file}: model_type is {raw.get('model_type')!r}, not 'hubert'")
        _check_sizes(raw, config_file)
        config = HubertConfig.from_dict(raw)
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, ContentEncoderError):
            raise
        raise ContentEncoderError(f"{config_file}: unreadable HuBERT config ({exc})") from exc
    present = [name for name in _WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise ContentEncoderError(f"{folder}: no weights (looked for {', '.join(_WEIGHT_FILES)})")
    state: dict[str, torch.Tensor] = {}
    file = folder / present[0]
    try:
        files = [file]
        if file.name.endswith(".index.json"):  # sharded: the index maps parameter names to shard files
            shards = json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()
            files = [folder / name for name in dict.fromkeys(shards)]
        for file in files:
            state.update(_read_weight_file(file))
    except ContentEncoderError:
        raise
    except Exception as exc:  # safetensors/torch/json raise several unrelated types for damaged files
        raise ContentEncoderError(f"{file}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    hubert, final_proj = {}, {}
    for key, tensor in state.items():
        key = key.removeprefix("hubert.")
        if key.startswith("final_proj."):
            final_proj[key[len("final_proj."):]] = tensor
        elif not key.startswith(_HEAD_PREFIXES):
            hubert[key] = tensor
    normalize = False
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        normalize = bool(json.loads(preprocessor.read_text(encoding="utf-8")).get("do_normalize", False))
    return config, hubert, final_proj, normalize, raw.get("content_encoder_kind")


# --- resolving paths and Hub ids ---------------------------------------------------------------------------------

DEFAULT_CONTENT_ENCODER = "lj1995/VoiceConversionWebUI/hubert_base.pt"  # RVC's ContentVec file (the CLI default)


def _resolve(path_or_hub_id: str | os.PathLike, filename: str | None, revision: str | None) -> Path:
    """A local file or folder for a path or Hub reference (`rvc_peft.utils.hub.resolve`: one rule for every loader)."""
    from ..utils.hub import HubError, LocalPathNotFoundError, resolve

    name = os.fspath(path_or_hub_id)
    note = ("; download it once with network access, or pass a local transformers folder or fairseq .pt "
            "(--content-encoder PATH)")
    if name.removeprefix("hf://") == DEFAULT_CONTENT_ENCODER:
        note = f"; it is RVC's default content encoder (hubert_base.pt){note.replace(';', ':', 1)}"
    try:
        return resolve(name, filename=filename, revision=revision, offline_note=note,
                       allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors", "*.index.json",
                                       "*.bin"])
    except LocalPathNotFoundError as err:
        raise ContentEncoderError(f"{err.path}: no such file or folder{err.hint}") from None
    except HubError as err:
        raise ContentEncoderError(str(err)) from None


def load_content_encoder(
    path_or_hub_id: str | os.PathLike,
    version: str = "v2",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    filename: str | None = None,
    revision: str | None = None,
    kind: str | None = None,
) -> ContentEncoder | MFCCContentEncoder:
    """Load a HuBERT/ContentVec content encoder for RVC `version` ("v1": layer 9 + final_proj, "v2": layer 12).

    `path_or_hub_id` is a transformers folder, a fairseq checkpoint file (e.g. RVC's `hubert_base.pt`), a Hub id
    ("owner/name", with `filename=` for a fairseq file in that repo, or "owner/name/file.pt"). Hub downloads go
    through `huggingface_hub` (cache, `HF_HUB_OFFLINE`, tokens as usual).

    `kind` is read from our own saved config, else guessed: "contentvec" when the checkpoint names ContentVec or
    has its layout (fairseq: 500 label classes and a 256-d `final_proj`; transformers: a `final_proj`), else
    "hubert". Caveat: Facebook's HuBERT-base has the same layout as RVC's ContentVec file and cannot be told apart
    by structure; RVC voices need ContentVec features. Pass `kind=` to record what you know.

    A folder written by `MFCCContentEncoder.save_pretrained` (the voice lab's stand-in, `config.json` with
    `model_type: "rvc_lab_mfcc"`) loads as that encoder.

    Raises `ContentEncoderError` (or its fairseq counterpart `FairseqCheckpointError`, also a `ValueError`) naming
    the file or Hub id: not found / offline, not a HuBERT model, truncated, or a pickle that would run code.
    """
    path = _resolve(path_or_hub_id, filename, revision)
    source = str(path_or_hub_id if not filename else f"{path_or_hub_id}/{filename}")
    if path.is_file() and (path.name == "config.json" or (path.name in _WEIGHT_FILES
                                                           and (path.parent / "config.json").is_file())):
        path = path.parent  # a file inside a transformers folder stands for the folder
    if path.is_dir() and is_lab_encoder_folder(path):  # the voice lab's stand-in for ContentVec
        lab = load_lab_encoder(path, version, source)
        logger.info("loaded the lab content encoder (%d-d %s features) from %s", lab.output_dim, version, source)
        return lab.to(device=device, dtype=dtype)
    if path.is_dir():
        config, hubert_sd, final_sd, normalize, saved_kind = _load_transformers_folder(path)
        guessed = saved_kind or ("contentvec" if final_sd or "contentvec" in source.lower() else "hubert")
    else:
        converted = convert_hubert_checkpoint(path)
        config, hubert_sd, final_sd, normalize, guessed = (converted.config, converted.state_dict,
                                                           converted.final_proj, converted.normalize, converted.kind)
        del converted
    hubert, final_proj = _build_hubert(config, hubert_sd, str(path)), _final_proj(final_sd)
    del hubert_sd, final_sd  # the model now owns the tensors; a dtype change below frees each old one as it goes
    encoder = ContentEncoder(hubert, final_proj, version, kind=kind or guessed, normalize=normalize,
                             name_or_path=source)
    encoder.weights_path = str(path)
    logger.info("loaded %s content encoder (%d-d %s features) from %s", encoder.kind, encoder.output_dim, version,
                source)
    return encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
