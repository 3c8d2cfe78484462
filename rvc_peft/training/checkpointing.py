"""Training checkpoints: `output_dir/checkpoint-<step>/`, saved and restored by `CheckpointManager`.

What a checkpoint folder holds, and how every file is checked on resume: `rvc_peft.training.checkpoint_files`
(safetensors and JSON only, so a shared or downloaded checkpoint can never run code).

Saving goes to a hidden `.tmp-checkpoint-<step>` folder that is renamed into place only after every process
finished writing, so a crash, Ctrl-C or a full disk never leaves a half-written `checkpoint-*` behind: "latest" is
always the newest complete checkpoint. Old checkpoints are rotated out only after the new one exists.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from torch import nn

from ..utils.files import follow_umask
from .checkpoint_files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SCALER_FILE,
    STATE_FILE,
    check_trainable_state,
    copy_trainable,
    load_optimizer,
    load_rng_state,
    load_scaler,
    load_scheduler,
    read_training_state,
    save_optimizer,
    save_rng_state,
    scheduler_file,
    scheduler_state,
    sha256_of,
    trainable_state,
    verify_file,
    write_json,
)
from .errors import CheckpointSaveError, TrainingSetupError

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
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


class CheckpointManager:
    """Saves and restores training state in the pickle-free format of the module docstring.

    models: name -> the *unwrapped* module whose trainable tensors belong in the checkpoint ("generator",
    "discriminator"); optimizers / schedulers: name -> the optimiser / LR scheduler of that model. The fp16 loss
    scaler is `accelerator.scaler`. Call `save` on every process (it synchronises them), `load` likewise.
    """

    def __init__(self, accelerator: Any, output_dir: str | os.PathLike, models: dict[str, nn.Module],
                 total_limit: int | None = None, *, optimizers: dict[str, Any] | None = None,
                 schedulers: dict[str, Any] | None = None) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.models = models
        self.optimizers = dict(optimizers or {})
        self.schedulers = dict(schedulers or {})
        self.total_limit = total_limit
        for name in list(self.optimizers) + list(self.schedulers):
            if name not in models:
                raise ValueError(f"optimizer/scheduler '{name}' has no model of that name")

    def _write_files(self, folder: Path) -> None:
        """This process's share of a checkpoint: everything on the main process, its RNG state on every process."""
        from safetensors.torch import save_file

        accelerator = self.accelerator
        if accelerator.is_main_process:
            for name, module in self.models.items():
                state = trainable_state(module)
                if state:
                    save_file(state, str(folder / f"{name}_trainable.safetensors"))
            for name, optimizer in self.optimizers.items():
                save_optimizer(folder, name, optimizer, self.models[name])
            for name, scheduler in self.schedulers.items():
                write_json(folder / scheduler_file(name), scheduler_state(scheduler))
            scaler = accelerator.scaler
            write_json(folder / SCALER_FILE, {"enabled": scaler is not None,
                                                **({"state": scaler.state_dict()} if scaler is not None else {})})
        save_rng_state(folder, accelerator.process_index)

    def _any_failed(self, error: Exception | None) -> bool:
        failed = torch.tensor([1.0 if error is not None else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            failed = self.accelerator.reduce(failed, reduction="sum")
        return failed.item() > 0

    def _fail(self, final: Path, temp: Path, error: Exception | None) -> None:
        if self.accelerator.is_main_process:
            shutil.rmtree(temp, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        previous = list_checkpoints(self.output_dir)
        keep = f"; the last complete checkpoint is {previous[-1][1]}" if previous else ""
        reason = f"{type(error).__name__}: {error}" if error is not None else "another process failed to write"
        raise CheckpointSaveError(f"could not write checkpoint {final} ({reason}){keep}. Check the free disk "
                                  "space, quota and permissions (or lower --checkpoints_total_limit) and resume "
                                  "with --resume_from_checkpoint latest") from error

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write `checkpoint-<step>` (all processes must call this); returns its path.

        Raises `CheckpointSaveError` on every process when any of them failed to write; earlier checkpoints are
        then untouched and the temporary folder is removed.
        """
        accelerator = self.accelerator
        final = self.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        temp = self.output_dir / f"{TEMP_PREFIX}{step}"
        # Every process must reach the failure-flag reductions below whatever goes wrong, or the others wait there
        # forever; hence `except Exception` and not a list of types: a full disk surfaces as OSError from Python
        # and SafetensorError from safetensors, and a non-JSON value as TypeError/ValueError.
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
        # two phases: every process writes its files; then (all of them done) the main one lists their sizes and
        # SHA-256 in the state file, which is what makes the folder a checkpoint
        for phase in ("files", "state"):
            try:
                if error is None and phase == "files":
                    self._write_files(temp)
                elif error is None and accelerator.is_main_process:
                    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
                             for p in sorted(temp.iterdir()) if p.name != STATE_FILE}
                    write_json(temp / STATE_FILE, {**state, "step": step, "format": FORMAT_NAME,
                                                    "format_version": FORMAT_VERSION, "files": files,
                                                    "num_processes": accelerator.num_processes})
                    follow_umask(temp)  # safetensors creates its files 0o600; outputs follow the umask
            except Exception as err:  # noqa: BLE001 (see above)
                error = err
            except BaseException:  # a second Ctrl-C while writing: abort, but leave no half-written folder behind
                if accelerator.is_main_process:
                    shutil.rmtree(temp, ignore_errors=True)
                raise
            if self._any_failed(error):
                self._fail(final, temp, error)
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
        """Restore models, optimisers, schedulers, scaler and RNGs from `checkpoint`; returns its training state.

        Every file is verified and checked first; nothing changes unless all of them are sound.
        """
        checkpoint = Path(checkpoint)
        state = read_training_state(checkpoint)
        steps: list[Callable[[], None]] = []
        for name, module in self.models.items():
            if any(p.requires_grad for p in module.parameters()):
                file = f"{name}_trainable.safetensors"
                if not (checkpoint / file).is_file():
                    raise TrainingSetupError(f"{checkpoint / file}: missing from the checkpoint; was it made with "
                                             "another --discriminator_mode or --loss?")
                saved = check_trainable_state(module, verify_file(checkpoint, file, state))
                steps.append(lambda module=module, saved=saved: copy_trainable(module, saved))
        for name, optimizer in self.optimizers.items():
            steps.append(load_optimizer(checkpoint, name, optimizer, self.models[name], state))
        for name, scheduler in self.schedulers.items():
            steps.append(load_scheduler(checkpoint, name, scheduler, state))
        steps.append(load_scaler(checkpoint, self.accelerator.scaler, state))
        rank, saved_processes = self.accelerator.process_index, state.get("num_processes")
        if isinstance(saved_processes, int) and rank >= saved_processes:
            # the run now has more processes than the checkpoint: this one keeps its seeded generators (the
            # trainer already warned that the data order differs from an uninterrupted run)
            logger.info("%s: no random state for process %d (saved by %d processes); it keeps its seeded "
                        "generators", checkpoint, rank, saved_processes, main_process_only=False)
        else:
            steps.append(load_rng_state(checkpoint, rank, state))
        for apply in steps:  # all checked: now change the run
            apply()
        return state
