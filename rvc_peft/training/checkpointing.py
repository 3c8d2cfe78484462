"""Training checkpoints: `output_dir/checkpoint-<step>/`, written by `accelerator.save_state` with trainable tensors only.

A checkpoint folder holds:

* `generator_trainable.safetensors` — the generator's trainable tensors (LoRA factors, `modules_to_save` copies),
  and `discriminator_trainable.safetensors` when the discriminator trains (all of it, or its adapter). Frozen base
  weights are never written: they come from `--pretrained_model_name_or_path` / `--pretrained_discriminator`.
* `optimizer.bin`, `optimizer_1.bin`, `scaler.pt` (fp16), `random_states_<rank>.pkl` (Python, NumPy, torch and CUDA
  RNGs of every process) and `custom_checkpoint_<i>.pkl` (the learning-rate schedulers) — accelerate's own files.
* `training_state.json` — step, epoch and the settings a resumed run must share.

Saving goes to a hidden `.tmp-checkpoint-<step>` folder that is renamed into place only after every process
finished writing, so a crash, Ctrl-C or a full disk never leaves a half-written `checkpoint-*` behind: "latest" is
always the newest complete checkpoint. Old checkpoints are rotated out only after the new one exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from torch import nn

from .errors import CheckpointSaveError, TrainingSetupError

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
STATE_FILE = "training_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in `output_dir` as (step, folder), oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_dir() and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def resolve_checkpoint(output_dir: str | os.PathLike, value: str | None) -> Path | None:
    """The folder `--resume_from_checkpoint` names: "latest" -> the newest complete checkpoint (None if there is
    none yet: a fresh start), or an explicit folder (which must be a complete checkpoint)."""
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(value)
    if not path.is_absolute() and not path.exists() and (Path(output_dir) / value).exists():
        path = Path(output_dir) / value
    if not path.is_dir():
        raise TrainingSetupError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if not (path / STATE_FILE).is_file():
        raise TrainingSetupError(f"--resume_from_checkpoint {value}: {path} is not a complete rvc-peft checkpoint "
                                 f"({STATE_FILE} is missing)")
    return path


def read_training_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingSetupError(f"{path}: unreadable checkpoint state ({err})") from err


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of `model` by parameter name (detached, contiguous, on the CPU)."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, file: Path) -> None:
    """Copy the tensors of `file` into `model`'s trainable parameters; names and shapes must match exactly."""
    from safetensors.torch import load_file

    saved = load_file(str(file))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise TrainingSetupError(
            f"{file}: the checkpoint's trainable tensors do not fit this run "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); "
            "resume with the same --rank/--lora_preset/--lora_targets/--train_speaker_embedding/--discriminator_mode"
        )
    with torch.no_grad():
        for name, param in params.items():
            if tuple(saved[name].shape) != tuple(param.shape):
                raise TrainingSetupError(f"{file}: {name} has shape {list(saved[name].shape)} in the checkpoint but "
                                         f"{list(param.shape)} in this run (another --rank?)")
            param.copy_(saved[name].to(param.dtype))


class CheckpointManager:
    """Saves and restores training state through `accelerator.save_state` / `load_state` (see module docstring).

    models: name -> the *unwrapped* module whose trainable tensors belong in the checkpoint ("generator",
    "discriminator"). Call `save` on every process (it synchronises them), `load` likewise.
    """

    def __init__(self, accelerator: Any, output_dir: str | os.PathLike, models: dict[str, nn.Module],
                 total_limit: int | None = None) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.models = models
        self.total_limit = total_limit
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    # accelerate calls these with its list of prepared models; we save/load trainable tensors ourselves and
    # empty the lists so that accelerate writes/reads no full model dumps.
    def _save_hook(self, models: list, weights: list, output_dir: str) -> None:
        weights.clear()
        if self.accelerator.is_main_process:
            from safetensors.torch import save_file

            for name, module in self.models.items():
                state = trainable_state(module)
                if state:
                    save_file(state, os.path.join(output_dir, f"{name}_trainable.safetensors"))

    def _load_hook(self, models: list, input_dir: str) -> None:
        models.clear()
        for name, module in self.models.items():
            if any(p.requires_grad for p in module.parameters()):
                file = Path(input_dir) / f"{name}_trainable.safetensors"
                if not file.is_file():
                    raise TrainingSetupError(f"{input_dir}: {file.name} is missing; was this checkpoint made with "
                                             f"another --discriminator_mode or --loss?")
                load_trainable_state(module, file)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write `checkpoint-<step>` (all processes must call this); returns its path.

        Raises `CheckpointSaveError` on every process when any of them failed to write; earlier checkpoints are
        then untouched and the temporary folder is removed.
        """
        accelerator = self.accelerator
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        temp = self.output_dir / f"{TEMP_PREFIX}{step}"
        # Every process must reach the failure-flag reduction below whatever goes wrong, or the others wait there
        # forever; hence `except Exception` and not a list of types: a full disk surfaces as OSError from Python,
        # SafetensorError from safetensors and RuntimeError from torch.save, and a failing hook can raise anything.
        error: Exception | None = None
        try:
            if accelerator.is_main_process:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                for stale in self.output_dir.glob(f"{TEMP_PREFIX}*"):
                    shutil.rmtree(stale, ignore_errors=True)
                temp.mkdir()
        except Exception as err:  # noqa: BLE001 (see above: must not escape before the reduction)
            error = err
        accelerator.wait_for_everyone()
        try:
            if error is None:
                accelerator.save_state(str(temp))
                if accelerator.is_main_process:
                    payload = json.dumps({**state, "step": step}, indent=2, sort_keys=True)
                    (temp / STATE_FILE).write_text(payload + "\n", encoding="utf-8")
        except Exception as err:  # noqa: BLE001 (see above)
            error = err
        except BaseException:  # a second Ctrl-C while writing: abort, but leave no half-written folder behind
            if accelerator.is_main_process:
                shutil.rmtree(temp, ignore_errors=True)
            raise
        failed = torch.tensor([1.0 if error is not None else 0.0], device=accelerator.device)
        if accelerator.num_processes > 1:
            failed = accelerator.reduce(failed, reduction="sum")
        if failed.item() > 0:
            if accelerator.is_main_process:
                shutil.rmtree(temp, ignore_errors=True)
            accelerator.wait_for_everyone()
            previous = list_checkpoints(self.output_dir)
            keep = f"; the last complete checkpoint is {previous[-1][1]}" if previous else ""
            reason = f"{type(error).__name__}: {error}" if error is not None else "another process failed to write"
            raise CheckpointSaveError(f"could not write checkpoint {final} ({reason}){keep}. Check the free disk "
                                      "space, quota and permissions (or lower --checkpoints_total_limit) and resume "
                                      "with --resume_from_checkpoint latest") from error
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if final.exists():  # re-saving a step (e.g. interrupted right after resuming): swap, then delete the old
                old = self.output_dir / f"{TEMP_PREFIX}{step}-old"
                os.replace(final, old)
                os.replace(temp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temp, final)
            self._rotate(keep=final)
        accelerator.wait_for_everyone()
        return final

    def _rotate(self, keep: Path) -> None:
        if not self.total_limit:
            return
        found = [path for _, path in list_checkpoints(self.output_dir) if path != keep]
        excess = len(found) + 1 - self.total_limit
        for path in found[: max(0, excess)]:
            logger.info("removing old checkpoint %s (--checkpoints_total_limit %d)", path, self.total_limit)
            shutil.rmtree(path, ignore_errors=True)

    def load(self, checkpoint: Path) -> dict[str, Any]:
        """Restore models, optimisers, scaler, schedulers and RNGs from `checkpoint`; returns its training state."""
        state = read_training_state(checkpoint)
        self.accelerator.load_state(str(checkpoint))
        return state
