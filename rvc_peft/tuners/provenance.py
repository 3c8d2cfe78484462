"""Provenance of RVC adapters: which base they were made for, checked again whenever they are loaded.

The facts ("RVC facts") travel with the adapter in two places:

* `adapter_config.json` → `auto_mapping["rvc"]`. `auto_mapping` is a standard PEFT config field (a free-form dict
  PEFT uses to find the base model class), so the facts survive every load path — `PeftModel.from_pretrained`,
  `load_adapter`, transformers' `load_adapter`, `add_weighted_adapter` — without extra files or downloads, and stock
  PEFT still reads the file without warnings;
* `rvc_adapter.json`, the same dict as a standalone file for tools that do not parse PEFT configs.

What is recorded: RVC version, pitch (use_f0), sample rate, content encoder, speaker id, the base model's name
(hub id or file name), a content hash of its weights (`base_model_fingerprint`) and its architecture numbers,
plus an optional training summary.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.nn.utils import parametrize

from ..models.weight_norm import legacy_weight_norm_hooks

FACTS_KEY = "rvc"
ADAPTER_INFO_NAME = "rvc_adapter.json"
FORMAT_NAME = "rvc-peft-adapter"
FORMAT_VERSION = 1
# architecture numbers that must match for an adapter to fit (spk_embed_dim is checked softly: presets never
# target the speaker table, so a base with another speaker count still fits)
ARCHITECTURE_FIELDS = (
    "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
    "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates", "upsample_initial_channel",
    "upsample_kernel_sizes", "gin_channels",
)
_FINGERPRINT_CACHE = "_rvc_peft_base_fingerprint"
_LORA_SEGMENTS = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_dropout"}
_HUB_REFERENCE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[^/]+)*$")


class IncompatibleAdapterError(ValueError):
    """An adapter loaded onto a base it was not made for (other RVC version, sample rate, pitch or shapes)."""


# --- helpers on models ----------------------------------------------------------------------------------------------

def unwrap_base_model(model: nn.Module) -> nn.Module:
    """The plain model under a `PeftModel` or a PEFT tuner, or `model` itself."""
    from peft import PeftMixedModel, PeftModel
    from peft.tuners.tuners_utils import BaseTuner

    if isinstance(model, (PeftModel, PeftMixedModel)):
        model = model.get_base_model()
    if isinstance(model, BaseTuner):
        model = model.model
    return model


def is_rvc_model(model: nn.Module) -> bool:
    """True for an `RVCSynthesizer` (a transformers model whose config has model_type "rvc")."""
    return getattr(getattr(model, "config", None), "model_type", None) == "rvc"


# Set to True on a model class (or instance) to have it treated as an RVC network by `is_rvc_network`.
RVC_NETWORK_ATTRIBUTE = "rvc_peft_rvc_network"


def is_rvc_network(model: nn.Module) -> bool:
    """True for the networks whose grouped `Conv1d` layers get rvc_peft's LoRA layer (see `needs_rvc_conv1d`).

    That is an `RVCSynthesizer`, rvc_peft's `MultiPeriodDiscriminator` or one of its sub-discriminators, or any
    model that sets `rvc_peft_rvc_network = True` (an RVC-style network of your own). Other models keep PEFT's
    stock layer for grouped convs, so adapters made with stock PEFT keep loading there.
    """
    from ..models.discriminators import DiscriminatorP, DiscriminatorS, MultiPeriodDiscriminator

    model = unwrap_base_model(model)
    return (
        is_rvc_model(model)
        or isinstance(model, (MultiPeriodDiscriminator, DiscriminatorS, DiscriminatorP))
        or getattr(model, RVC_NETWORK_ATTRIBUTE, False) is True
    )


def _clean_name(name: str) -> str:
    return name.replace(".base_layer", "")


def _effective_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Base weights by their plain-model names, weight-normed layers contributing their effective `weight`.

    PEFT wrappers (`.base_layer`) and LoRA parameters are skipped, and so is the posterior encoder `enc_q` (training
    only, absent from exported voices), so a base hashes the same folded or not, wrapped or not, with or without enc_q.
    """
    tensors: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        segments = module_name.split(".") if module_name else []
        if isinstance(module, BaseTunerLayer) or _LORA_SEGMENTS.intersection(segments):
            continue
        if "parametrizations" in segments or (segments and segments[0] == "enc_q"):
            continue
        prefix = _clean_name(module_name) + "." if module_name else ""
        skip = set()
        if parametrize.is_parametrized(module, "weight"):
            tensors[prefix + "weight"] = module.weight.detach()
        for hook in legacy_weight_norm_hooks(module):
            tensors[prefix + hook.name] = hook.compute_weight(module).detach()
            skip.update({hook.name + "_g", hook.name + "_v"})
        for param_name, param in module.named_parameters(recurse=False):
            if param_name not in skip:
                tensors[prefix + param_name] = param.detach()
    return tensors


def base_model_fingerprint(model: nn.Module, *, use_cache: bool = True) -> str:
    """A content hash of a model's base weights: "sha256:<hex>".

    sha256 over the sorted parameter names, shapes and float32 bytes of the *effective* weights (weight norm
    evaluated, LoRA and `enc_q` left out, PEFT wrappers unwrapped). The value is cached on the model object the first
    time (before any adapter can be merged into it); merging and unloading clears the cache.
    """
    model = unwrap_base_model(model)
    cached = model.__dict__.get(_FINGERPRINT_CACHE)
    if use_cache and cached:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(_effective_tensors(model).items()):
        digest.update(name.encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    value = "sha256:" + digest.hexdigest()
    model.__dict__[_FINGERPRINT_CACHE] = value
    return value


def forget_fingerprint(model: nn.Module) -> None:
    """Drop the cached fingerprint (the weights changed, e.g. an adapter was merged in)."""
    unwrap_base_model(model).__dict__.pop(_FINGERPRINT_CACHE, None)


def display_name(name_or_path: str | None) -> str | None:
    """A Hub reference ("org/repo", "org/repo/sub/file.pth", "hf://...") stays as it is; a local path becomes its
    file name, so shared adapters carry no private directory names."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    looks_local = os.path.exists(name) or name.startswith(("/", ".", "~")) or "\\" in name
    if not looks_local and _HUB_REFERENCE.match(name.removeprefix("hf://")):
        return name
    return Path(name).name or name


def hub_repo_of(name_or_path: str | None) -> str | None:
    """The "org/repo" part of a Hub reference, or None for local files and unnamed bases."""
    name = display_name(name_or_path)
    if not name or os.path.exists(name):
        return None
    match = _HUB_REFERENCE.match(name.removeprefix("hf://"))
    return "/".join(name.removeprefix("hf://").split("/")[:2]) if match else None


def base_name_or_path(model: nn.Module) -> str | None:
    """The base's hub id or file name, from `model.name_or_path` / `config._name_or_path` (set by load_synthesizer)."""
    model = unwrap_base_model(model)
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return display_name(name)


# --- the facts ------------------------------------------------------------------------------------------------------

def rvc_facts(model: nn.Module) -> dict[str, Any]:
    """The RVC facts of a base model, as stored with adapters made for it (see the module docstring)."""
    from .. import __version__

    model = unwrap_base_model(model)
    config = model.config
    architecture = {key: getattr(config, key) for key in ARCHITECTURE_FIELDS}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "rvc_peft_version": __version__,
        "version": config.version,
        "use_f0": bool(config.use_f0),
        "sampling_rate": int(config.sampling_rate),
        "content_encoder": config.content_encoder,
        "content_dim": int(config.content_dim),
        "speaker_id": int(config.speaker_id),
        "base_model": {
            "name_or_path": base_name_or_path(model),
            "fingerprint": base_model_fingerprint(model),
            "rvc_class": config.rvc_class_name,
            "spk_embed_dim": int(config.spk_embed_dim),
            "architecture": json.loads(json.dumps(architecture)),
        },
        "training": None,
    }


def facts_of_config(config: Any) -> dict[str, Any] | None:
    """The RVC facts stored in a PEFT config (`auto_mapping["rvc"]`), or None for a non-RVC adapter."""
    auto_mapping = getattr(config, "auto_mapping", None)
    if isinstance(auto_mapping, dict) and isinstance(auto_mapping.get(FACTS_KEY), dict):
        return auto_mapping[FACTS_KEY]
    return None


def store_facts(config: Any, facts: dict[str, Any], model: nn.Module | None = None) -> None:
    """Put `facts` into `config.auto_mapping["rvc"]` (keeping PEFT's base_model_class/parent_library entries)."""
    auto_mapping = dict(config.auto_mapping or {}) if isinstance(config.auto_mapping, dict) else {}
    if model is not None and "base_model_class" not in auto_mapping:
        # PeftModel fills these on save for task_type=None; transformers' save path does not, and AutoPeftModel needs
        # both whenever auto_mapping is present
        base = unwrap_base_model(model)
        auto_mapping["base_model_class"] = type(base).__name__
        auto_mapping["parent_library"] = type(base).__module__
    auto_mapping[FACTS_KEY] = facts
    config.auto_mapping = auto_mapping


def describe(facts: dict[str, Any]) -> str:
    """"RVC v2 40k with pitch (base 'f0G40k.pth', sha256:1a2b3c4d5e6f)" — for error messages."""
    base = facts.get("base_model") or {}
    pitch = "with pitch" if facts.get("use_f0") else "without pitch"
    rate = facts.get("sampling_rate")
    rate_name = f"{int(rate) // 1000}k" if isinstance(rate, int) else str(rate)
    fingerprint = str(base.get("fingerprint") or "unknown hash")[:19]
    return f"RVC {facts.get('version')} {rate_name} {pitch} (base '{base.get('name_or_path') or 'unnamed'}', {fingerprint})"


def check_compatible(facts: dict[str, Any], model: nn.Module, adapter_name: str) -> None:
    """Raise `IncompatibleAdapterError` if the adapter's RVC facts do not fit `model`; warn on softer differences.

    Hard: RVC version, pitch, sample rate, architecture numbers (these change which layers exist or their shapes, or
    make the adapter meaningless). Soft (one warning naming each): a different base fingerprint (same architecture,
    other weights, e.g. another pretrained base), a different speaker-table size, or a different content encoder
    (the `content_encoder` both RVC configs record, e.g. "contentvec" vs Applio's "chinese-hubert-base": features of
    the same width but another meaning).
    """
    model = unwrap_base_model(model)
    if not is_rvc_model(model):
        raise IncompatibleAdapterError(
            f"adapter '{adapter_name}' was made for an {describe(facts)}, but it is being loaded onto a "
            f"{type(model).__name__}, which is not an RVC synthesizer"
        )
    mine = rvc_facts(model)
    problems = [
        f"{key} {facts.get(key)!r} vs {mine[key]!r}" for key in ("version", "use_f0", "sampling_rate")
        if facts.get(key) != mine[key]
    ]
    theirs_arch = (facts.get("base_model") or {}).get("architecture") or {}
    mine_arch = mine["base_model"]["architecture"]
    problems += [
        f"{key} {theirs_arch[key]!r} vs {mine_arch[key]!r}" for key in ARCHITECTURE_FIELDS
        if key in theirs_arch and theirs_arch[key] != mine_arch[key]
    ]
    if problems:
        raise IncompatibleAdapterError(
            f"adapter '{adapter_name}' was made for an {describe(facts)}, but the model it is being loaded onto is an "
            f"{describe(mine)}; they differ in " + ", ".join(problems) + ". Load the base the adapter was trained on."
        )
    theirs_base = facts.get("base_model") or {}
    soft = []
    if theirs_base.get("fingerprint") and theirs_base["fingerprint"] != mine["base_model"]["fingerprint"]:
        soft.append(f"weights ({theirs_base['fingerprint'][:19]} vs {mine['base_model']['fingerprint'][:19]})")
    if theirs_base.get("spk_embed_dim") not in (None, mine["base_model"]["spk_embed_dim"]):
        soft.append(f"speaker table size ({theirs_base['spk_embed_dim']} vs {mine['base_model']['spk_embed_dim']})")
    # an adapter saved without the field (None) has nothing to compare
    if facts.get("content_encoder") not in (None, mine["content_encoder"]):
        soft.append(f"content encoder ({facts['content_encoder']!r} vs {mine['content_encoder']!r})")
    if soft:
        warnings.warn(
            f"adapter '{adapter_name}' was made for base '{theirs_base.get('name_or_path') or 'unnamed'}', and this "
            f"base ('{mine['base_model']['name_or_path'] or 'unnamed'}') has the same architecture but different "
            + " and ".join(soft) + "; the adapter will load, but it may not sound as intended.",
            UserWarning,
            stacklevel=3,
        )


# --- user-facing helpers -----------------------------------------------------------------------------------------

def set_training_summary(model: nn.Module, summary: dict[str, Any], adapter_name: str | None = None) -> None:
    """Attach a training summary (steps, epochs, learning rate, dataset, ...) to an adapter's RVC facts.

    It is written to `rvc_adapter.json`, `adapter_config.json` and the model card on the next `save_pretrained` /
    `push_to_hub`. Values must be JSON-serialisable.
    """
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        raise ValueError("set_training_summary needs a model with a PEFT adapter (a PeftModel or a model with adapters)")
    if adapter_name is None:
        active = getattr(model, "active_adapter", None)
        adapter_name = active if isinstance(active, str) else next(iter(configs))
    if adapter_name not in configs:
        raise ValueError(f"no adapter named {adapter_name!r}; the model has {sorted(configs)}")
    facts = facts_of_config(configs[adapter_name])
    if facts is None:
        raise ValueError(f"adapter {adapter_name!r} is not on an RVC model (it has no RVC facts to extend)")
    facts["training"] = json.loads(json.dumps(dict(summary)))


def read_adapter_info(path_or_hub_id: str | os.PathLike, **hub_kwargs: Any) -> dict[str, Any]:
    """The RVC facts of a saved adapter (local folder or hub id): `rvc_adapter.json`, else `adapter_config.json`.

    Raises `ValueError` naming the location if neither holds RVC facts. A local path that does not exist
    (`rvc_peft.utils.hub` decides what is local: e.g. a mistyped `my_voice_lroa`) raises
    `LocalPathNotFoundError`, and a Hub id that cannot be fetched (offline, no network) `HubUnavailableError`, both
    at once and both `OSError`s, so callers that read a `ValueError` as "a plain PEFT adapter" do not go on to ask
    the Hub again.
    """
    from ..utils.hub import (
        HubEntryNotFoundError,
        HubReference,
        HubUnavailableError,
        classify,
        local_not_found,
        resolve,
    )

    location = str(path_or_hub_id)
    hub_kwargs = dict(hub_kwargs)
    subfolder = hub_kwargs.pop("subfolder", None)
    revision = hub_kwargs.pop("revision", None)
    target = classify(location)  # LocalPathNotFoundError now, before any Hub request
    if isinstance(target, Path) and subfolder and not (target / subfolder).is_dir():
        raise local_not_found(str(Path(location, subfolder)), f" (the folder {location} holds no {subfolder!r})")
    for filename in (ADAPTER_INFO_NAME, "adapter_config.json"):
        if isinstance(target, HubReference):
            inner = "/".join(part for part in (target.path, subfolder, filename) if part)
            try:
                path = resolve(HubReference(target.repo_id, inner, target.revision), revision=revision, **hub_kwargs)
            except HubEntryNotFoundError:  # optional file: try the next one
                continue
            except HubUnavailableError as err:  # name the adapter, not the file: PEFT would need the Hub too
                raise HubUnavailableError(location, f"not a local adapter folder, and cannot get it from the Hugging "
                                                    f"Face Hub ({err.cause}); download it once with network access, "
                                                    f"or pass a local adapter folder", err.cause) from None
        else:
            path = Path(target, subfolder or "", filename)
            if not path.is_file():
                continue
        data = json.loads(path.read_text())
        facts = data if filename == ADAPTER_INFO_NAME else (data.get("auto_mapping") or {}).get(FACTS_KEY)
        if isinstance(facts, dict):
            return facts
    raise ValueError(f"{location}: no RVC adapter information ({ADAPTER_INFO_NAME} or auto_mapping.rvc) found")


def write_adapter_info(directory: str | os.PathLike, facts: dict[str, Any]) -> Path:
    """Write `facts` to `<directory>/rvc_adapter.json` (atomically) and return the path."""
    from ..utils.files import atomic_write

    path = Path(directory) / ADAPTER_INFO_NAME
    text = json.dumps(facts, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


# --- checking adapter files before PEFT reads them ------------------------------------------------------------------

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PICKLED_WEIGHTS_NAME = "adapter_model.bin"
_LORA_TENSOR_SEGMENTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
# The adapter weights file being loaded through one of our entry points, so that the checks PEFT's load path runs in
# `RVCLoraModel` (keys, shapes, values) can name the file; None for other load paths (they name the adapter).
_LOADING_FROM: contextvars.ContextVar[str | None] = contextvars.ContextVar("rvc_peft_adapter_file", default=None)


class AdapterFileError(ValueError):
    """An adapter folder or file that cannot be used (missing, damaged, pickled, not JSON); names the file."""


def check_adapter_folder(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a local adapter folder the way PEFT will, but with errors naming the file, and check its weights.

    Returns `(adapter_config, tensors)`. Refuses, with an `AdapterFileError` (a `ValueError`) naming the file: a path
    that is not a folder, a missing or non-JSON `adapter_config.json`, a config without a known `peft_type`, a
    folder with only a pickled `adapter_model.bin` (never unpickled: stock PEFT would), a missing, empty or damaged
    `adapter_model.safetensors`, and tensors with NaN/inf/absurd values or integer dtypes (`check_weights`).
    """
    from peft.utils import PeftType

    from ..checkpoints.safe_load import CheckpointError, check_weights, read_safetensors

    folder = Path(folder)
    if not folder.exists():
        raise AdapterFileError(f"{folder}: adapter folder not found")
    if not folder.is_dir():
        raise AdapterFileError(f"{folder}: is a file, not an adapter folder (a PEFT adapter is a folder with "
                               f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME})")
    config_file = folder / ADAPTER_CONFIG_NAME
    if not config_file.is_file():
        raise AdapterFileError(f"{config_file}: not found (not a PEFT adapter folder)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise AdapterFileError(f"{config_file}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise AdapterFileError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise AdapterFileError(f"{config_file}: holds a JSON {type(config).__name__}, not an object")
    peft_type = config.get("peft_type")
    known = [member.value for member in PeftType]
    if peft_type not in known:
        raise AdapterFileError(f"{config_file}: peft_type {peft_type!r} is not a PEFT adapter type "
                               f"(rvc-peft adapters are 'LORA')")
    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.exists():
        if (folder / PICKLED_WEIGHTS_NAME).exists():
            raise AdapterFileError(
                f"{folder / PICKLED_WEIGHTS_NAME}: refusing to read a pickle-format adapter (unpickling a stranger's "
                f"file can run code); rvc-peft reads only {ADAPTER_WEIGHTS_NAME}. Convert it where you trust it: "
                f"load it with PEFT and save_pretrained(..., safe_serialization=True)")
        raise AdapterFileError(f"{weights}: not found (the adapter folder has no weights)")
    try:
        tensors = read_safetensors(weights)
        check_weights(tensors, weights)
    except CheckpointError as err:
        raise AdapterFileError(str(err)) from None
    return config, tensors


@contextlib.contextmanager
def loading_adapter_file(file: str | os.PathLike | None) -> Iterator[None]:
    """While active, the adapter checks run inside PEFT's load path name `file` in their errors."""
    token = _LOADING_FROM.set(None if file is None else str(file))
    try:
        yield
    finally:
        _LOADING_FROM.reset(token)


def adapter_source_label(adapter_name: str) -> str:
    """The adapter file being loaded (see `loading_adapter_file`), else "adapter '<name>'"."""
    return _LOADING_FROM.get() or f"adapter '{adapter_name}'"


def check_adapter_state(model: nn.Module, adapter_name: str, state_dict: dict[str, torch.Tensor],
                        made_for: str) -> None:
    """Refuse adapter weights that would load partly, at the wrong shapes or with broken values.

    `state_dict` is PEFT's remapped adapter state (keys as in `model.state_dict()`, adapter name inserted). Raises
    `IncompatibleAdapterError` naming the adapter file (or adapter) for: LoRA tensors of this adapter that the file
    lacks (PEFT would leave them at their initial values, B = 0: those layers would silently be the plain base),
    tensors the model has no place for (PEFT ignores them), shapes that differ from the model's (with the RVC
    version when the content-feature width reveals it), and NaN/inf/absurd values or integer dtypes.
    """
    from ..checkpoints.safe_load import weight_problem

    where = adapter_source_label(adapter_name)
    own = model.state_dict()
    prefix = "base_model.model."
    own_plain = {key.removeprefix(prefix): value for key, value in own.items()}
    given = {key.removeprefix(prefix): value for key, value in state_dict.items()}
    expected = {
        key for key in own_plain
        if any(f".{segment}.{adapter_name}" in f".{key}." for segment in _LORA_TENSOR_SEGMENTS)
    }
    missing = sorted(expected - set(given))
    unexpected = sorted(set(given) - set(own_plain))
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the adapter's {len(expected)} LoRA tensors are missing from the file "
                        f"(e.g. {', '.join(_short_keys(missing, adapter_name))}); those layers would silently stay "
                        "the plain base")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors in the file fit no layer of this model "
                        f"(e.g. {', '.join(_short_keys(unexpected, adapter_name))})")
    if problems:
        raise IncompatibleAdapterError(f"{where}: adapter '{adapter_name}' ({made_for}) does not "
                                       "match its own config: " + "; ".join(problems))
    mismatched = [(key, tuple(value.shape), tuple(own_plain[key].shape)) for key, value in given.items()
                  if tuple(value.shape) != tuple(own_plain[key].shape)]
    if mismatched:
        versions = _versions_from_shapes(mismatched)
        shown = "; ".join(f"{_short_key(key, adapter_name)}: adapter {list(got)} vs model {list(want)}"
                          for key, got, want in mismatched[:3])
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        raise IncompatibleAdapterError(
            f"{where}: adapter '{adapter_name}' ({made_for}) does not fit this model "
            f"'{base_name_or_path(model) or type(unwrap_base_model(model)).__name__}'{versions}: {shown}{more}"
        )
    for key, value in given.items():
        problem = weight_problem(key, value)
        if problem is not None:
            raise IncompatibleAdapterError(f"{where}: adapter '{adapter_name}' tensor "
                                           f"'{_short_key(key, adapter_name)}' {problem}")


def _short_key(key: str, adapter_name: str) -> str:
    """The key as it is spelled in adapter_model.safetensors (no adapter name, PEFT's save prefix)."""
    return "base_model.model." + key.replace(f".{adapter_name}.", ".").removesuffix(f".{adapter_name}")


def _short_keys(keys: list[str], adapter_name: str) -> list[str]:
    return [_short_key(key, adapter_name) for key in keys[:3]] + ([f"... {len(keys) - 3} more"] if len(keys) > 3
                                                                   else [])


def _versions_from_shapes(mismatched: list[tuple[str, tuple, tuple]]) -> str:
    """" (the adapter is for RVC v1, 256-wide content features; the model is v2, 768-wide)" when emb_phone shows it."""
    widths = {256: "v1", 768: "v2"}
    for key, got, want in mismatched:
        if ".emb_phone." in f".{key}" and ".lora_A." in key and len(got) == 2 and len(want) == 2:
            theirs, mine = widths.get(got[1]), widths.get(want[1])
            if theirs and mine and theirs != mine:
                return (f" (the adapter is for RVC {theirs}, {got[1]}-wide content features; the model is RVC {mine}, "
                        f"{want[1]}-wide)")
    return ""
