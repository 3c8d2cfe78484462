"""What keeps a run safe: the Accelerator it runs under, a clean stop on Ctrl-C/SIGTERM, and the NaN/inf and
out-of-memory checks that turn a broken step into a clear error instead of a broken checkpoint."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.logging import get_logger
from torch import nn

from .checkpointing import list_checkpoints
from .config import TrainingConfig
from .errors import NonFiniteLossError, OutOfMemoryError, TrainingSetupError
from .setup import needs_unused_parameter_search

logger = get_logger(__name__)


def build_accelerator(args: TrainingConfig) -> Any:
    """The run's `Accelerator`: accumulation, precision, trackers, DDP's unused-parameter search as `args` say."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    project = ProjectConfiguration(project_dir=args.output_dir,
                                   logging_dir=os.path.join(args.output_dir, args.logging_dir))
    ddp = DistributedDataParallelKwargs(find_unused_parameters=needs_unused_parameter_search(args))
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, log_with=args.report_to,
                              project_config=project, kwargs_handlers=[ddp])
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise TrainingSetupError("--mixed_precision fp16 needs a GPU; on the CPU use --mixed_precision bf16 or no")
    configure_run_threads(accelerator, getattr(args, "num_threads", None))
    return accelerator


def configure_run_threads(accelerator: Any, requested: int | None) -> int:
    """PyTorch CPU threads for this process: `--num_threads`, else OMP_NUM_THREADS, else the machine's cores shared
    by the processes that run on it (`rvc_peft.runtime.choose_num_threads`). Without this, one process took every
    core even when other programs kept some busy, and was up to 16x slower on a shared 2-core machine."""
    from ..runtime import configure_threads

    # torchrun (under accelerate launch too) says how many processes share this machine; otherwise all of them do
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "") or accelerator.num_processes)
    return configure_threads(local, requested)


class StopRequest:
    """SIGINT/SIGTERM -> finish the current step, save a checkpoint, exit. A second Ctrl-C aborts at once.

    Under `accelerate launch` (torchrun) the launcher forwards a single SIGINT/SIGTERM to every worker and SIGKILLs
    the workers that are still running 30 seconds later. So on a stop request the loop saves the checkpoint right
    after the current step and skips that step's validation: the step in progress plus one checkpoint must fit in
    those 30 s, or the run ends without the new checkpoint (the previous ones stay intact). A stop on the last step
    lets the run finish normally (adapter, end-of-training extras), which can take longer than 30 s.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:  # noqa: PYI034 (final in practice; typing.Self needs 3.11)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stop requested (%s): finishing this step and saving a checkpoint; press Ctrl-C again to abort "
                       "without saving", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def adapter_digest(module: nn.Module) -> str:
    """sha256 over the trainable tensors (name order): equal digests = identical adapters (used across ranks)."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


# --- NaN / inf ----------------------------------------------------------------------------------------------------

def first_nonfinite_metric(metrics: dict[str, float], *, include_grad_norms: bool) -> tuple[str, float] | None:
    """The first loss term that is NaN or infinite, else (when asked) the first such gradient norm, as (name, value).

    Losses come first: a NaN loss makes the gradients NaN too, and the loss is the cause worth naming.
    """
    prefixes = ("loss/", "grad_norm") if include_grad_norms else ("loss/",)
    for prefix in prefixes:
        for name, value in metrics.items():
            if name.startswith(prefix) and not math.isfinite(value):
                return name, value
    return None


def first_nonfinite_tensor(named: Sequence[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first tensor holding a NaN or inf (None when all are finite); one device sync for all."""
    if not named:
        return None
    finite = torch.stack([torch.isfinite(tensor.detach()).all() for _, tensor in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0, 0])][0]


def check_step_is_finite(metrics: dict[str, float], parameters: Sequence[tuple[str, torch.Tensor]], *, step: int,
                         output_dir: str | os.PathLike, scaler_active: bool) -> None:
    """Raise `NonFiniteLossError` if update `step` broke the run; call it before anything of the step is saved.

    Losses are computed before the update, so a finite loss does not mean the update was sound: non-finite gradients
    (which AdamW turns into NaN weights) and non-finite weights after the update count too. Under fp16's GradScaler
    an infinite gradient norm is routine (the scaler skips that step and lowers the scale), so gradient norms are
    only checked without one; the weights are checked either way.
    """
    bad = first_nonfinite_metric(metrics, include_grad_norms=not scaler_active)
    if bad is not None:
        what = f"{bad[0]} became {bad[1]}"
    else:
        name = first_nonfinite_tensor(parameters)
        if name is None:
            return
        what = f"the update made the trainable weight {name} non-finite"
    found = list_checkpoints(output_dir)
    last = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was saved yet"
    raise NonFiniteLossError(
        f"{what} at step {step}; training stopped and nothing was saved from this state ({last}). Try a lower "
        "--learning_rate (or --max_grad_norm), --mixed_precision bf16 or no, or check the dataset for broken slices; "
        "then --resume_from_checkpoint latest.")


# --- out of memory ------------------------------------------------------------------------------------------------

def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError saying the device or the host ran out of memory."""
    message = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in message or (
        "can't allocate memory" in message)


def out_of_memory_error(args: TrainingConfig, *, step: int, segment_frames: int,
                        mixed_precision: str) -> OutOfMemoryError:
    """The error to raise instead: what the step looked like and the settings that need less memory."""
    return OutOfMemoryError(
        f"out of memory at step {step} (batch {args.train_batch_size} per process, {segment_frames}-frame window, "
        f"mixed precision {mixed_precision}). Try --train_batch_size {max(1, args.train_batch_size // 2)} with "
        f"--gradient_accumulation_steps {args.gradient_accumulation_steps * 2}, --segment_frames "
        f"{max(8, segment_frames // 2)}, or --mixed_precision bf16/fp16; resume with --resume_from_checkpoint latest")
