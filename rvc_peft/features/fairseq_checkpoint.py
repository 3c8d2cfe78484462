"""Read fairseq HuBERT/ContentVec checkpoints (RVC's `hubert_base.pt`) without fairseq and without running pickle code.

A fairseq checkpoint is a zip-format `torch.save` file whose pickle names, besides tensors, fairseq's
`Dictionary` (the label set in `task_state`) and sometimes omegaconf / argparse / enum objects in its config.
`read_checkpoint` unpickles it with `RestrictedUnpickler`: tensor-rebuild functions and storage types are the only
callables it lets the pickle reach; the fairseq/omegaconf/argparse/enum names become inert `Placeholder`
objects that only record what was pickled; anything else (`os.system`, `builtins.eval`, ...) raises
`UnsafePickleError`. Tensor storages are read one at a time from the zip straight into their final buffers, so
loading a 360 MB checkpoint needs about 360 MB, not twice that.

`convert_hubert_checkpoint` then builds a transformers `HubertConfig` from the checkpoint's own config and maps
the fairseq parameter names onto transformers' `HubertModel` names (plus `final_proj`).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import HubertConfig

from ..checkpoints.safe_load import MAX_VIEW_ELEMENTS, CheckpointError, check_weights
from .fairseq_config import ConfigValueError, hubert_config_from_fairseq, short_repr

__all__ = [
    "ConfigStructureError",
    "ConvertedHubert",
    "FairseqCheckpointError",
    "Placeholder",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "convert_hubert_checkpoint",
    "convert_hubert_state_dict",
    "read_checkpoint",
    "to_plain",
]

_CHUNK = 1 << 24  # bytes read from the zip per call: bounds the transient copy per tensor


class FairseqCheckpointError(ValueError):
    """A checkpoint that cannot be read or is not a fairseq HuBERT/ContentVec model; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsafePickleError(FairseqCheckpointError):
    """The checkpoint's pickle names a global outside the allow-list (it could run code when loaded)."""


# --- inert placeholders ------------------------------------------------------------------------------------------

class Placeholder:
    """Stands in for a class the checkpoint names (fairseq `Dictionary`, omegaconf nodes, enums, Namespace).

    It runs no code of the original class: it only keeps the constructor arguments (`args`), the pickled state
    (`state`) and any items the pickle appends, so `to_plain` can read them as plain Python data.
    """

    qualified_name = "?"

    args: tuple
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any):  # both REDUCE (cls(*args)) and NEWOBJ (cls.__new__) land here
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, []
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder {self.qualified_name}>"


_PLACEHOLDER_TYPES: dict[str, type[Placeholder]] = {}
# Module prefixes whose classes become placeholders: fairseq's Dictionary/config classes, omegaconf containers and
# nodes, argparse.Namespace (old fairseq `args`), enums, numpy scalars that trainers leave in `extra_state`.
_PLACEHOLDER_MODULES = ("fairseq", "omegaconf", "argparse", "enum", "typing", "numpy")


def _placeholder_type(module: str, name: str) -> type[Placeholder]:
    key = f"{module}.{name}"
    if key not in _PLACEHOLDER_TYPES:
        _PLACEHOLDER_TYPES[key] = type(name, (Placeholder,), {"qualified_name": key, "__module__": __name__})
    return _PLACEHOLDER_TYPES[key]


# --- tensors -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    # A view on the storage read from the zip: no copy. requires_grad / hooks / metadata are dropped on purpose.
    size, stride = tuple(size), tuple(stride)
    numel = 1
    for dim in size:
        numel *= int(dim)
    # An expanded (stride-0) view is fine at weight sizes, but a crafted one could present 10^12 elements over a few
    # bytes and make every later pass over the weights run for hours (bound shared with `check_weights`).
    if numel > max(storage.numel(), MAX_VIEW_ELEMENTS):
        raise pickle.UnpicklingError(f"a tensor of shape {list(size)} claims more elements than its storage holds "
                                     f"({storage.numel()})")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2 with a disallowed function {func!r}")
    return func(*args)


_ALLOWED_CALLABLES: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # omegaconf keeps flags in a defaultdict; a plain dict holds the same items without keeping a factory
    ("collections", "defaultdict"): lambda *_: {},
    ("torch", "Size"): torch.Size,
    # protocol-2 pickles spell bytes (e.g. inside numpy scalars) as _codecs.encode(text, "latin1")
    ("_codecs", "encode"): lambda text, encoding="utf-8": str(text).encode(str(encoding)),
}
# Plain data types; they appear as values (omegaconf records `object_type: dict`) or build containers.
_ALLOWED_CALLABLES.update({("builtins", t.__name__): t for t in (dict, list, tuple, set, frozenset, str, int,
                                                                   float, complex, bool, object)})


def _bytes(*args: Any) -> bytes:
    # bytes(n) is the one allowed call whose result can be far larger than the pickle that asks for it
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError(f"bytes({args[0]}) in a checkpoint pickle (a zero-filled buffer) is refused")
    return bytes(*args)


_ALLOWED_CALLABLES[("builtins", "bytes")] = _bytes


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for a torch zip checkpoint that can only rebuild tensors, containers and inert placeholders.

    `find_class` never imports anything: it answers from a fixed table of tensor-rebuild functions, storage types,
    `collections.OrderedDict`, `torch.Size` and torch dtypes, turns fairseq/omegaconf/argparse/enum/typing/numpy
    names into `Placeholder` subclasses, and raises `UnsafePickleError` for every other global.
    `persistent_load` reads the storage records of the zip lazily, each straight into its own buffer.
    """

    def __init__(self, file: Any, *, path: str, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._path, self._archive, self._prefix = path, archive, prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles use Python 2 names (__builtin__.long, copy_reg...); translate like pickle itself does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in _PLACEHOLDER_MODULES:
            return _placeholder_type(module, name)
        raise UnsafePickleError(self._path, f"the pickle refers to {module}.{name}, which is not allowed in a "
                                "weights checkpoint (loading it could run code); refusing to load")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if key not in self._storages:
            self._storages[key] = self._read_storage(str(key), storage_type.dtype, int(numel))
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{self._prefix}data/{key}"
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise FairseqCheckpointError(self._path, f"missing tensor record {name!r} (truncated or corrupt)") from None
        if info.file_size != nbytes:
            raise FairseqCheckpointError(self._path, f"tensor record {name!r} has {info.file_size} bytes, "
                                         f"expected {nbytes} (truncated or corrupt)")
        raw = torch.empty(nbytes, dtype=torch.uint8)
        view, pos = memoryview(raw.numpy()), 0
        with self._archive.open(info) as member:
            while pos < nbytes:
                got = member.readinto(view[pos:pos + _CHUNK])
                if not got:
                    raise FairseqCheckpointError(self._path, f"tensor record {name!r} ends early (truncated)")
                pos += got
        return raw.view(dtype) if numel else torch.empty(0, dtype=dtype)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a zip-format `torch.save` file safely (see `RestrictedUnpickler`); tensors come back on the CPU.

    Raises `FairseqCheckpointError` (naming the file) for missing, empty, truncated, non-zip or big-endian files,
    and `UnsafePickleError` for pickles naming disallowed globals.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FairseqCheckpointError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise FairseqCheckpointError(path, "file is empty")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FairseqCheckpointError(path, "not a zip-format PyTorch checkpoint (truncated, corrupt, or saved in "
                                     "the legacy pre-1.6 torch.save format)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pickles) != 1:
            raise FairseqCheckpointError(path, "zip file holds no torch.save pickle (data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise FairseqCheckpointError(path, "big-endian checkpoints are not supported")
        bad = _first_bad_member(archive, path)
        if bad is not None:  # the storage reader below reads exact byte counts and never reaches zipfile's CRC check
            raise FairseqCheckpointError(path, f"corrupt file (CRC check failed for member {bad})")
        try:
            with archive.open(pickles[0]) as stream:
                return RestrictedUnpickler(stream, path=path, archive=archive, prefix=prefix).load()
        except FairseqCheckpointError:
            raise
        except Exception as exc:  # damaged or hostile data fails in many ways; all of them mean "unusable file"
            raise FairseqCheckpointError(path, f"cannot unpickle the checkpoint ({type(exc).__name__}: {exc})") from exc


def _first_bad_member(archive: zipfile.ZipFile, path: str) -> str | None:
    try:
        return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise FairseqCheckpointError(path, f"corrupt file (zip archive unreadable: {exc})") from None


# Bounds for walking a checkpoint's config: real fairseq configs are a few levels deep and a few thousand values
# (the label dictionary included); a pickle can make a list that contains itself, or share one list between both
# halves of another 60 times over (2^60 paths through a few hundred bytes).
_MAX_CONFIG_DEPTH = 64
_MAX_CONFIG_NODES = 100_000


class ConfigStructureError(ValueError):
    """A checkpoint's config that refers to itself, nests too deeply or is too large to be a real config."""


def to_plain(obj: Any) -> Any:
    """Placeholders, Namespaces and containers -> plain dicts/lists/scalars (omegaconf nodes become their values).

    Raises `ConfigStructureError` for a structure that contains itself, nests deeper than 64 levels or holds more
    than 100,000 values (a crafted pickle; fairseq configs with their label dictionary hold a few thousand).
    """
    return _PlainWalk().plain(obj)


class _PlainWalk:
    """`to_plain` with the containers on the current path (cycle check) and a count of values seen (budget)."""

    def __init__(self) -> None:
        self.on_path: set[int] = set()
        self.count = 0

    def plain(self, obj: Any) -> Any:
        self.count += 1
        if self.count > _MAX_CONFIG_NODES:
            raise ConfigStructureError(f"more than {_MAX_CONFIG_NODES} values (not a real config)")
        if not isinstance(obj, (Placeholder, argparse.Namespace, dict, list, tuple)):
            return obj
        if id(obj) in self.on_path:
            raise ConfigStructureError("a container that contains itself")
        if len(self.on_path) >= _MAX_CONFIG_DEPTH:
            raise ConfigStructureError(f"nested more than {_MAX_CONFIG_DEPTH} levels deep")
        self.on_path.add(id(obj))
        try:
            return _plain_container(obj, self.plain)
        finally:
            self.on_path.discard(id(obj))


def _plain_container(obj: Any, to_plain: Callable[[Any], Any]) -> Any:
    if isinstance(obj, Placeholder):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict_state, slots_state)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict) and "_content" in state:  # omegaconf DictConfig / ListConfig
            return to_plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:  # omegaconf value node
            return to_plain(state["_val"])
        if isinstance(state, dict):  # Namespace, fairseq Dictionary, ...
            return {k: to_plain(v) for k, v in state.items()}
        if len(obj.args) == 1 and not obj.items:  # enum member pickled as EnumClass(value)
            return to_plain(obj.args[0])
        return [to_plain(v) for v in obj.items] if obj.items else obj
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj



# --- weights -----------------------------------------------------------------------------------------------------

_KEY_RULES = [(re.compile(pattern), target) for pattern, target in [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", "encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
     "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
     "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"mask_emb", "masked_spec_embed"),
    (r"final_proj\.(weight|bias)", r"final_proj.\1"),
    (r"label_embs_concat", ""),  # pre-training label embeddings: unused for feature extraction
]]


def convert_hubert_state_dict(
    state_dict: dict[str, torch.Tensor], config: HubertConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """fairseq HuBERT parameter names -> (`HubertModel` state dict, `final_proj` state dict).

    The positional conv's weight norm is accepted as `weight_g/weight_v` or `parametrizations.weight.original0/1`
    and returned in the parametrizations spelling. A checkpoint without `post_extract_proj` (conv width equal to
    the model width) gets an identity projection. Raises `ValueError` listing any key that has no mapping.
    """
    hubert: dict[str, torch.Tensor] = {}
    final_proj: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        for pattern, target in _KEY_RULES:
            if pattern.fullmatch(key):
                new_key = pattern.sub(target, key)
                if new_key.startswith("final_proj."):
                    final_proj[new_key[len("final_proj."):]] = tensor
                elif new_key:
                    hubert[new_key] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        raise ValueError(f"parameters with no HuBERT mapping: {shown}")
    if "feature_projection.projection.weight" not in hubert and config.conv_dim[-1] == config.hidden_size:
        hubert["feature_projection.projection.weight"] = torch.eye(config.hidden_size)
        hubert["feature_projection.projection.bias"] = torch.zeros(config.hidden_size)
    return hubert, final_proj


@dataclass
class ConvertedHubert:
    """What `convert_hubert_checkpoint` found: a transformers config and state dicts, plus RVC-relevant facts."""

    config: HubertConfig
    state_dict: dict[str, torch.Tensor]  # transformers HubertModel names
    final_proj: dict[str, torch.Tensor]  # {"weight": [final_dim, hidden], "bias": [final_dim]} or {}
    normalize: bool  # task.normalize: layer-norm the whole waveform before the conv stack
    kind: str  # "contentvec" or "hubert" (see `_guess_kind`)
    num_label_classes: int | None  # k-means clusters the model was pre-trained on (dictionary size minus specials)
    cfg: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config as plain data


def _guess_kind(cfg: dict[str, Any], num_classes: int | None, final_dim: int) -> str:
    # ContentVec's own training configs name it; RVC's hubert_base.pt (ContentVec "legacy 500") only has the layout:
    # 500 label classes and a 256-d final projection. Facebook's HuBERT-base shares that layout, so a file with
    # it is reported as "contentvec" by structure alone -- see the caveat in `load_content_encoder`.
    if "contentvec" in repr(cfg).lower():
        return "contentvec"
    return "contentvec" if num_classes == 500 and final_dim == 256 else "hubert"


def convert_hubert_checkpoint(path: str | os.PathLike) -> ConvertedHubert:
    """Read a fairseq HuBERT/ContentVec checkpoint safely and convert it to transformers names and config.

    Raises `FairseqCheckpointError` naming the file when it cannot be read, holds no fairseq model, or is not a
    HuBERT-architecture model (e.g. an RVC voice `.pth`, a wav2vec 2.0 checkpoint).
    """
    path = os.fspath(path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        keys = ", ".join(map(str, list(checkpoint)[:8])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise FairseqCheckpointError(path, f"not a fairseq checkpoint: no 'model' state dict (top level: {keys})")
    weights = checkpoint["model"]
    bad = next((k for k, v in weights.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if bad is not None:
        raise FairseqCheckpointError(path, f"'model' entry {short_repr(bad)} is a {type(weights[bad]).__name__}, not a "
                                     "named tensor")
    try:
        check_weights(weights, path)
    except CheckpointError as exc:
        raise FairseqCheckpointError(path, exc.reason) from None
    plain = {}
    for key in ("cfg", "args", "task_state"):
        try:
            plain[key] = to_plain(checkpoint.get(key)) or {}
        except (ConfigStructureError, TypeError, ValueError) as exc:  # TypeError: a crafted pickled object state
            raise FairseqCheckpointError(path, f"'{key}' is not a usable config: {exc}") from None
        if not isinstance(plain[key], dict):
            raise FairseqCheckpointError(path, f"'{key}' is a {type(plain[key]).__name__}, not a mapping")
    cfg, args = plain["cfg"], plain["args"]
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else args
    task_cfg = cfg.get("task") if isinstance(cfg.get("task"), dict) else args
    arch = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    named_hubert = "hubert" in arch or "contentvec" in arch
    unnamed_hubert = not arch and "label_embs_concat" in weights and "quantizer.vars" not in weights
    if not (named_hubert or unnamed_hubert):
        raise FairseqCheckpointError(path, f"not a HuBERT/ContentVec checkpoint (model {arch or 'unknown'!r})")
    try:
        config = hubert_config_from_fairseq(model_cfg)
    except ConfigValueError as exc:
        where = "cfg.model" if model_cfg is cfg.get("model") else "args"
        raise FairseqCheckpointError(path, f"invalid model config ({where}): {exc}") from None
    try:
        hubert, final_proj = convert_hubert_state_dict(weights, config)
    except ValueError as exc:
        raise FairseqCheckpointError(path, f"cannot convert to transformers HubertModel: {exc}") from exc
    if final_proj:
        if final_proj.get("weight") is None or final_proj["weight"].dim() != 2:
            shape = list(final_proj["weight"].shape) if "weight" in final_proj else "missing"
            raise FairseqCheckpointError(path, f"final_proj.weight is {shape}; expected a [out, in] matrix")
        config.classifier_proj_size = int(final_proj["weight"].shape[0])
    num_classes = None
    dictionaries = plain["task_state"].get("dictionaries") or []
    first = dictionaries[0] if isinstance(dictionaries, list) and dictionaries else None
    if isinstance(first, dict) and isinstance(first.get("symbols"), list):
        nspecial = first.get("nspecial", 4)
        num_classes = len(first["symbols"]) - (nspecial if isinstance(nspecial, int) else 4)
    elif "label_embs_concat" in weights and weights["label_embs_concat"].dim() >= 1:
        num_classes = int(weights["label_embs_concat"].shape[0]) - 4
    kind = _guess_kind(cfg or args, num_classes, config.classifier_proj_size if final_proj else 0)
    return ConvertedHubert(config, hubert, final_proj, bool(task_cfg.get("normalize", False)), kind, num_classes,
                           cfg or args)
