"""The files of a training checkpoint: a format of our own that holds no pickle at all, and strict readers.

A checkpoint folder holds only safetensors (tensors) and JSON (everything else), so resuming from a folder that was
shared, downloaded or tampered with can never run code: loading a safetensors or JSON file only builds tensors, numbers
and strings. (Accelerate's `save_state` files — `random_states_<rank>.pkl`, `custom_checkpoint_<i>.pkl`,
`optimizer*.bin`, `scaler.pt` — are unpickled in full on `load_state`; a folder that has them is refused, never read.)

* `<model>_trainable.safetensors` — the trainable tensors of "generator" (LoRA factors, `modules_to_save` copies) and
  of "discriminator" when it trains (all of it, or its adapter). Frozen base weights are never written: they come
  from `--pretrained_model_name_or_path` / `--pretrained_discriminator`.
* `optimizer_<model>.safetensors` + `optimizer_<model>.json` — the AdamW moments and step counts, keyed by parameter
  name; its param groups (learning rate, betas, ...) and which parameters have state.
* `scheduler_<model>.json` — the learning-rate scheduler (`LambdaLR` with a `LearningRateSchedule`: plain numbers).
* `scaler.json` — the fp16 loss scaler (`{"enabled": false}` without one).
* `rng_state_<rank>.safetensors` + `rng_state_<rank>.json` — each process's torch CPU/CUDA generators (uint8 tensors)
  and Python `random` / NumPy generators (integer lists).
* `training_state.json` — step, epoch, the settings a resumed run must share, the format tag and the size and
  SHA-256 of every other file, so a truncated or bit-flipped file is caught before it is parsed.

Every file is checked against this run on load (names, shapes, dtypes, finite values, JSON types); any problem is a
`TrainingSetupError` naming the file — nothing is skipped, because a silently half-restored state would make the
"exact resume" an inexact one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.logging import get_logger
from torch import nn

from .errors import TrainingSetupError

logger = get_logger(__name__)

STATE_FILE = "training_state.json"
FORMAT_NAME = "rvc-peft-checkpoint"
FORMAT_VERSION = 2  # 1: accelerate's save_state (pickles), refused on load
SCALER_FILE = "scaler.json"
# what accelerate's save_state wrote (format 1) and load_state unpickled (pickle.load / torch.load)
LEGACY_FILES = re.compile(r"^(random_states_\d+\.pkl|custom_checkpoint_\d+\.pkl|optimizer(_\d+)?\.bin|scaler\.pt|"
                          r"scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|dl_state_dict(_\d+)?\.bin|"
                          r"pytorch_model(_\d+)?\.bin)$")
_STEP_KEY = "step"  # AdamW's per-parameter step counter: a 0-d float tensor, not shaped like the parameter


# --- strict readers: every problem is a TrainingSetupError that names the file ---------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _read_json(path: Path) -> Any:
    """JSON without NaN/Infinity (json.loads would accept them): a checkpoint never holds a non-finite number."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except FileNotFoundError:
        raise TrainingSetupError(f"{path}: missing from the checkpoint") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise TrainingSetupError(f"{path}: unreadable checkpoint file ({err})") from err


def write_json(path: Path, value: Any) -> None:
    # allow_nan=False: a NaN must fail the save (CheckpointSaveError), not produce a file the loader refuses
    path.write_text(json.dumps(value, indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from ..checkpoints.safe_load import CheckpointError, read_safetensors

    if not path.is_file():
        raise TrainingSetupError(f"{path}: missing from the checkpoint")
    try:
        return read_safetensors(path)
    except CheckpointError as err:  # empty, truncated, damaged header: the message names the file and the problem
        raise TrainingSetupError(str(err)) from err


def _check_finite(path: Path, key: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise TrainingSetupError(f"{path}: {key} holds NaN or infinite values")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_training_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """`training_state.json` of `checkpoint`, after checking that it is this format (older ones are refused)."""
    path = Path(checkpoint) / STATE_FILE
    state = _read_json(path)
    if not isinstance(state, dict):
        raise TrainingSetupError(f"{path}: unreadable checkpoint state (not a JSON object)")
    if "format" not in state:
        legacy = sorted(p.name for p in Path(checkpoint).iterdir() if LEGACY_FILES.match(p.name))
        found = f" ({', '.join(legacy)})" if legacy else ""
        raise TrainingSetupError(
            f"{checkpoint}: this checkpoint was written by an older rvc-peft in accelerate's save_state format"
            f"{found}, whose files are Python pickles that can run arbitrary code when loaded, so it is refused and "
            "none of it is read. Start a new run, or finish this one with the trusted older rvc-peft version that "
            "wrote it (its generator_trainable.safetensors is plain safetensors and stays usable)")
    if state.get("format") != FORMAT_NAME or state.get("format_version") != FORMAT_VERSION:
        raise TrainingSetupError(f"{path}: unsupported checkpoint format {state.get('format')!r} version "
                                 f"{state.get('format_version')!r} (this rvc-peft reads {FORMAT_NAME} version "
                                 f"{FORMAT_VERSION}); resume it with the rvc-peft version that wrote it")
    if not isinstance(state.get("step"), int) or state["step"] < 0:
        raise TrainingSetupError(f"{path}: 'step' must be a non-negative integer, got {state.get('step')!r}")
    if not isinstance(state.get("files"), dict):
        raise TrainingSetupError(f"{path}: the list of checkpoint files ('files') is missing or not an object")
    return state


def verify_file(checkpoint: Path, name: str, state: dict[str, Any]) -> Path:
    """`checkpoint/name`, after checking it exists and matches the size and SHA-256 recorded in the state file."""
    path = checkpoint / name
    entry = state["files"].get(name)
    if not path.is_file():
        raise TrainingSetupError(f"{path}: missing from the checkpoint (it is needed to resume this run)")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
        raise TrainingSetupError(f"{path}: not listed in {STATE_FILE} (files written by another run or by hand "
                                 "are not loaded)")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise TrainingSetupError(f"{path}: {size} bytes but {entry['bytes']} were written (truncated or replaced)")
    if sha256_of(path) != entry["sha256"]:
        raise TrainingSetupError(f"{path}: contents differ from what was written (SHA-256 mismatch: damaged or "
                                 "modified after saving)")
    return path


# --- model tensors -------------------------------------------------------------------------------------------------
def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of `model` by parameter name (detached, contiguous, on the CPU)."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def check_trainable_state(model: nn.Module, file: Path) -> dict[str, torch.Tensor]:
    """The tensors of `file`, checked against `model`'s trainable parameters: names, shapes and dtypes must match
    exactly and every value must be finite."""
    saved = _read_tensors(file)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise TrainingSetupError(
            f"{file}: the checkpoint's trainable tensors do not fit this run "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); "
            "resume with the same --rank/--lora_preset/--lora_targets/--train_speaker_embedding/--discriminator_mode"
        )
    for name, param in params.items():
        if tuple(saved[name].shape) != tuple(param.shape):
            raise TrainingSetupError(f"{file}: {name} has shape {list(saved[name].shape)} in the checkpoint but "
                                     f"{list(param.shape)} in this run (another --rank?)")
        if saved[name].dtype != param.dtype:
            raise TrainingSetupError(f"{file}: {name} is {saved[name].dtype} in the checkpoint but {param.dtype} in "
                                     "this run")
        _check_finite(file, name, saved[name])
    return saved


def load_trainable_state(model: nn.Module, file: Path) -> None:
    """Copy the tensors of `file` into `model`'s trainable parameters (checked by `check_trainable_state`)."""
    copy_trainable(model, check_trainable_state(model, file))


def copy_trainable(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(saved[name])


# --- optimisers ----------------------------------------------------------------------------------------------------
def _same_kind(saved: Any, current: Any) -> bool:
    """JSON value `saved` can stand where this run has `current` (tuples come back from JSON as lists)."""
    if isinstance(current, bool):
        return isinstance(saved, bool)
    if current is None:
        return saved is None
    if isinstance(current, int):
        return isinstance(saved, int) and not isinstance(saved, bool)
    if isinstance(current, float):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(current, str):
        return isinstance(saved, str)
    if isinstance(current, (list, tuple)):
        return (isinstance(saved, list) and len(saved) == len(current)
                and all(_same_kind(s, c) for s, c in zip(saved, current)))
    return False


def _to_kind(saved: Any, current: Any) -> Any:
    """`saved` (checked by `_same_kind`) in `current`'s Python types: floats stay floats, tuples tuples."""
    if isinstance(current, float):
        return float(saved)
    if isinstance(current, tuple):
        return tuple(_to_kind(s, c) for s, c in zip(saved, current))
    if isinstance(current, list):
        return [_to_kind(s, c) for s, c in zip(saved, current)]
    return saved


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)) or (
            isinstance(value, list) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value)):
        return value
    raise TypeError(f"{where}: {type(value).__name__} values cannot be stored in a checkpoint")


def _unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def _parameter_names(optimizer: torch.optim.Optimizer, model: nn.Module, name: str) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        try:
            groups.append([names[id(p)] for p in group["params"]])
        except KeyError:
            raise ValueError(f"optimizer '{name}' holds a parameter that is not in the '{name}' model") from None
    return groups


def optimizer_files(name: str) -> tuple[str, str]:
    return f"optimizer_{name}.safetensors", f"optimizer_{name}.json"


def save_optimizer(folder: Path, name: str, optimizer: Any, model: nn.Module) -> None:
    """Write `optimizer_<name>.safetensors` (state tensors as `<parameter name>/<key>`) and `optimizer_<name>.json`."""
    from safetensors.torch import save_file

    optimizer = _unwrap_optimizer(optimizer)
    group_names = _parameter_names(optimizer, model, name)
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for group, names in zip(optimizer.param_groups, group_names):
        for param, pname in zip(group["params"], names):
            if param not in optimizer.state:  # never stepped (no gradient yet): no state to keep
                continue
            entry: dict[str, Any] = {"tensors": [], "values": {}}
            for key, value in optimizer.state[param].items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{pname}/{key}"] = value.detach().contiguous().cpu()
                    entry["tensors"].append(key)
                else:
                    entry["values"][key] = _json_value(value, f"optimizer '{name}' state {pname}/{key}")
            state[pname] = entry
    groups = [{**{k: _json_value(v, f"optimizer '{name}' param group {k}") for k, v in group.items() if k != "params"},
               "params": names} for group, names in zip(optimizer.param_groups, group_names)]
    tensor_file, json_file = optimizer_files(name)
    save_file(tensors, str(folder / tensor_file))
    write_json(folder / json_file, {"param_groups": groups, "state": state})


def load_optimizer(checkpoint: Path, name: str, optimizer: Any, model: nn.Module,
                   state: dict[str, Any]) -> Callable[[], None]:
    """Check `optimizer_<name>.*` against this run's optimiser; returns the function that loads it."""
    optimizer = _unwrap_optimizer(optimizer)
    tensor_file, json_file = optimizer_files(name)
    json_path = verify_file(checkpoint, json_file, state)
    tensor_path = verify_file(checkpoint, tensor_file, state)
    saved = _read_json(json_path)
    tensors = _read_tensors(tensor_path)
    group_names = _parameter_names(optimizer, model, name)
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) or not isinstance(
            saved.get("state"), dict):
        raise TrainingSetupError(f"{json_path}: expected an object with 'param_groups' (a list) and 'state'")
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise TrainingSetupError(f"{json_path}: {len(saved['param_groups'])} parameter groups, this run's optimiser "
                                 f"has {len(optimizer.param_groups)}")
    groups = []
    for i, (group, current, names) in enumerate(zip(saved["param_groups"], optimizer.param_groups, group_names)):
        if not isinstance(group, dict) or group.get("params") != names:
            raise TrainingSetupError(f"{json_path}: parameter group {i} does not hold this run's trainable "
                                     "parameters (another --rank/--lora_preset/--lora_targets/--discriminator_mode?)")
        keys = set(current) - {"params"}
        if set(group) - {"params"} != keys:
            raise TrainingSetupError(f"{json_path}: parameter group {i} has settings {sorted(set(group) - {'params'})},"
                                     f" this run's optimiser has {sorted(keys)}")
        for key in keys:
            if not _same_kind(group[key], current[key]):
                raise TrainingSetupError(f"{json_path}: parameter group {i} setting {key!r} is {group[key]!r}, "
                                         f"not a value like this run's {current[key]!r}")
        groups.append({**{k: _to_kind(group[k], current[k]) for k in keys}, "params": []})
    index, params = {}, {}
    for names, group_params in zip(group_names, (g["params"] for g in optimizer.param_groups)):
        for pname, param in zip(names, group_params):
            index[pname], params[pname] = len(index), param
    for group, names in zip(groups, group_names):
        group["params"] = [index[n] for n in names]
    restored: dict[int, dict[str, Any]] = {}
    expected_keys = set()
    for pname, entry in saved["state"].items():
        if pname not in params:
            raise TrainingSetupError(f"{json_path}: state for {pname!r}, which this run does not train")
        if (not isinstance(entry, dict) or not isinstance(entry.get("tensors"), list)
                or not isinstance(entry.get("values"), dict) or not all(isinstance(k, str) for k in entry["tensors"])):
            raise TrainingSetupError(f"{json_path}: state of {pname} must be an object with 'tensors' and 'values'")
        param, values = params[pname], {}
        for key in entry["tensors"]:
            full = f"{pname}/{key}"
            expected_keys.add(full)
            if full not in tensors:
                raise TrainingSetupError(f"{tensor_path}: {full} is missing")
            tensor = tensors[full]
            if tensor.dim() == 0:  # a counter such as AdamW's step
                if not tensor.is_floating_point() and tensor.dtype not in (torch.int32, torch.int64):
                    raise TrainingSetupError(f"{tensor_path}: {full} is {tensor.dtype}, expected a number")
                _check_finite(tensor_path, full, tensor)
                if key == _STEP_KEY and (float(tensor) < 0 or float(tensor) != math.floor(float(tensor))):
                    raise TrainingSetupError(f"{tensor_path}: {full} is {float(tensor)}, expected a step count")
            else:
                if tuple(tensor.shape) != tuple(param.shape):
                    raise TrainingSetupError(f"{tensor_path}: {full} has shape {list(tensor.shape)}, the parameter "
                                             f"has {list(param.shape)}")
                if tensor.dtype != param.dtype:
                    raise TrainingSetupError(f"{tensor_path}: {full} is {tensor.dtype}, the parameter is {param.dtype}")
                _check_finite(tensor_path, full, tensor)
            values[key] = tensor
        for key, value in entry["values"].items():
            if key in values or not (value is None or isinstance(value, (bool, int, float, str))):
                raise TrainingSetupError(f"{json_path}: state value {pname}/{key} must be a single number or string "
                                         "(and not also a tensor)")
            values[key] = value
        restored[index[pname]] = values
    extra = sorted(set(tensors) - expected_keys)
    if extra:
        raise TrainingSetupError(f"{tensor_path}: {len(extra)} tensors not listed in {json_file}, e.g. {extra[:3]}")

    def apply() -> None:
        optimizer.load_state_dict({"state": restored, "param_groups": groups})

    return apply


# --- schedulers, scaler, random generators ----------------------------------------------------------------------------
def scheduler_file(name: str) -> str:
    return f"scheduler_{name}.json"


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    return {k: _json_value(v, f"scheduler {k}") if k != "lr_lambdas" else
            [None if fn is None else {a: _json_value(b, f"scheduler lambda {a}") for a, b in fn.items()} for fn in v]
            for k, v in scheduler.state_dict().items()}


def load_scheduler(checkpoint: Path, name: str, scheduler: Any, state: dict[str, Any]) -> Callable[[], None]:
    """Check `scheduler_<name>.json` against this run's scheduler (same keys, same kinds of values)."""
    from .optim import LearningRateSchedule

    path = verify_file(checkpoint, scheduler_file(name), state)
    saved, current = _read_json(path), scheduler.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(current):
        keys = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise TrainingSetupError(f"{path}: scheduler state with keys {keys}, this run's has {sorted(current)}")
    restored: dict[str, Any] = {}
    for key, value in current.items():
        if key == "lr_lambdas":
            if not isinstance(saved[key], list) or len(saved[key]) != len(value):
                raise TrainingSetupError(f"{path}: 'lr_lambdas' must list {len(value)} schedules")
            lambdas = []
            for fn, saved_fn in zip(value, saved[key]):
                if fn is None or saved_fn is None:
                    if fn is not saved_fn:
                        raise TrainingSetupError(f"{path}: 'lr_lambdas' does not fit this run's schedule")
                    lambdas.append(None)
                    continue
                if not isinstance(saved_fn, dict) or set(saved_fn) != set(fn) or not all(
                        _same_kind(saved_fn[a], fn[a]) for a in fn):
                    raise TrainingSetupError(f"{path}: learning-rate schedule {saved_fn!r} does not fit this run's "
                                             f"{fn!r}")
                converted = {a: _to_kind(saved_fn[a], fn[a]) for a in fn}
                if set(fn) == {"kind", "total_steps", "steps_per_epoch", "warmup_steps", "gamma"}:
                    try:  # a LearningRateSchedule: its own constructor validates the values
                        LearningRateSchedule(**converted)
                    except (TypeError, ValueError) as err:
                        raise TrainingSetupError(f"{path}: invalid learning-rate schedule ({err})") from err
                lambdas.append(converted)
            restored[key] = lambdas
        elif not _same_kind(saved[key], value):
            raise TrainingSetupError(f"{path}: {key!r} is {saved[key]!r}, not a value like this run's {value!r}")
        else:
            restored[key] = _to_kind(saved[key], value)
    if isinstance(restored.get("last_epoch"), int) and restored["last_epoch"] < 0:
        raise TrainingSetupError(f"{path}: 'last_epoch' is {restored['last_epoch']}")

    def apply() -> None:
        scheduler.load_state_dict(restored)

    return apply


def load_scaler(checkpoint: Path, scaler: Any, state: dict[str, Any]) -> Callable[[], None]:
    """Check `scaler.json`; a run with an fp16 scaler gets its scale and growth tracker back."""
    path = verify_file(checkpoint, SCALER_FILE, state)
    saved = _read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("enabled"), bool):
        raise TrainingSetupError(f"{path}: expected an object with 'enabled' (true/false)")
    if scaler is None or not saved["enabled"]:
        if (scaler is not None) != saved["enabled"]:
            logger.warning("%s: the checkpoint was made %s an fp16 loss scaler and this run has %s: the scaler "
                           "starts afresh", path, "with" if saved["enabled"] else "without",
                           "one" if scaler is not None else "none")
        return lambda: None
    current = scaler.state_dict()
    values = saved.get("state")
    if not isinstance(values, dict) or set(values) != set(current) or not all(
            _same_kind(values[k], current[k]) for k in current):
        raise TrainingSetupError(f"{path}: scaler state {values!r} does not fit this run's {current!r}")
    if not values["scale"] > 0:
        raise TrainingSetupError(f"{path}: loss scale {values['scale']} must be positive")
    restored = {k: _to_kind(values[k], current[k]) for k in current}
    return lambda: scaler.load_state_dict(restored)


def rng_files(rank: int) -> tuple[str, str]:
    return f"rng_state_{rank}.safetensors", f"rng_state_{rank}.json"


def save_rng_state(folder: Path, rank: int) -> None:
    """This process's generators: torch CPU/CUDA states as uint8 tensors, Python and NumPy states as integer lists."""
    from safetensors.torch import save_file

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = cuda_state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensor_file, json_file = rng_files(rank)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(folder / tensor_file))
    write_json(folder / json_file, {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {"bit_generator": name, "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    })


def _int_list(value: Any, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in value))


def load_rng_state(checkpoint: Path, rank: int, state: dict[str, Any]) -> Callable[[], None]:
    """Check this process's `rng_state_<rank>.*`; returns the function that restores every generator from it."""
    tensor_file, json_file = rng_files(rank)
    tensor_path = verify_file(checkpoint, tensor_file, state)
    json_path = verify_file(checkpoint, json_file, state)
    tensors, saved = _read_tensors(tensor_path), _read_json(json_path)
    reference = torch.get_rng_state()
    cpu = tensors.get("torch")
    if cpu is None or cpu.dtype != torch.uint8 or tuple(cpu.shape) != tuple(reference.shape):
        found = "missing" if cpu is None else f"{cpu.dtype} {list(cpu.shape)}"
        raise TrainingSetupError(f"{tensor_path}: 'torch' must be a uint8 tensor of shape {list(reference.shape)}, "
                                 f"got {found}")
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    extra = sorted(set(tensors) - {"torch"} - {f"cuda.{i}" for i in range(len(cuda))})
    if extra or any(t.dtype != torch.uint8 or t.dim() != 1 for t in cuda):
        raise TrainingSetupError(f"{tensor_path}: unexpected generator states {extra or [t.dtype for t in cuda]}")
    python, numpy_state = (saved.get("python"), saved.get("numpy")) if isinstance(saved, dict) else (None, None)
    if (not isinstance(python, dict) or python.get("version") != 3 or not _int_list(python.get("state"), 625)
            or python["state"][-1] > 624 or not (python.get("gauss_next") is None
                                                 or isinstance(python.get("gauss_next"), float))):
        raise TrainingSetupError(f"{json_path}: 'python' is not a state of Python's random module (version 3, "
                                 "625 integers, gauss_next)")
    if (not isinstance(numpy_state, dict) or numpy_state.get("bit_generator") != "MT19937"
            or not _int_list(numpy_state.get("keys"), 624) or not isinstance(numpy_state.get("pos"), int)
            or not 0 <= numpy_state["pos"] <= 624 or numpy_state.get("has_gauss") not in (0, 1)
            or not isinstance(numpy_state.get("cached_gaussian"), (int, float))):
        raise TrainingSetupError(f"{json_path}: 'numpy' is not a NumPy MT19937 state (624 keys, pos, has_gauss, "
                                 "cached_gaussian)")
    python_state = (3, tuple(python["state"]), python["gauss_next"])
    numpy_tuple = ("MT19937", np.asarray(numpy_state["keys"], dtype=np.uint32), numpy_state["pos"],
                   numpy_state["has_gauss"], float(numpy_state["cached_gaussian"]))
    try:  # the libraries' own checks, before anything is changed
        random.Random().setstate(python_state)
        np.random.RandomState().set_state(numpy_tuple)
        torch.Generator().set_state(cpu)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TrainingSetupError(f"{checkpoint}: invalid random generator state in {json_file}/{tensor_file} "
                                 f"({err})") from err

    def apply() -> None:
        random.setstate(python_state)
        np.random.set_state(numpy_tuple)
        torch.set_rng_state(cpu)
        if cuda and torch.cuda.is_available():
            count = torch.cuda.device_count()
            if count != len(cuda):
                logger.warning("%s: saved with %d CUDA devices, this process sees %d: restoring the first %d",
                               tensor_path, len(cuda), count, min(count, len(cuda)))
            for i, cuda_state in enumerate(cuda[:count]):
                torch.cuda.set_rng_state(cuda_state, i)
        elif torch.cuda.is_available():
            logger.warning("%s: no CUDA generator state in the checkpoint (saved without a GPU); CUDA random "
                           "numbers differ from an uninterrupted run", tensor_path)

    return apply
