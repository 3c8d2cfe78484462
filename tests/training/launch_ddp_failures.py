"""`accelerate launch` target (2 processes) for the distributed failure paths, on a tiny model instead of a training run.

1. Rank 0 cannot write its checkpoint files (RLIMIT_FSIZE lowered, SIGXFSZ ignored: writes fail with EFBIG as on a
   full disk), rank 1 can: both must raise `CheckpointSaveError` instead of one raising and the other waiting.
2. The end-of-training wait outlasts the default process group's timeout (set short here): the main process keeps
   the others waiting for longer than that timeout, as a long upload would.

usage: accelerate launch --multi_gpu --num_processes 2 launch_ddp_failures.py OUT; each rank prints JSON lines.
"""

import json
import os
import resource
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from rvc_peft.training.checkpointing import CheckpointManager, list_checkpoints
from rvc_peft.training.errors import CheckpointSaveError
from rvc_peft.training.finalize import EndOfTrainingBarrier

DEFAULT_TIMEOUT_S = 5


def report(accelerator: Accelerator, **values: object) -> None:
    # One write() per line: both ranks share the pipe, and under `python -u` print() would write the text and its
    # newline separately, so two ranks' lines could interleave. A single write below PIPE_BUF is atomic.
    line = json.dumps({"rank": accelerator.process_index, **values}) + "\n"
    os.write(sys.stdout.fileno(), line.encode())


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=DEFAULT_TIMEOUT_S))])
    end_barrier = EndOfTrainingBarrier(accelerator)  # made at setup, as the trainer does
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    manager = CheckpointManager(accelerator, out, {"generator": accelerator.unwrap_model(model)})
    manager.save(1, {})

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if accelerator.is_main_process:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        manager.save(2, {})
        report(accelerator, save="ok")
    except CheckpointSaveError as err:
        report(accelerator, save="CheckpointSaveError", message=str(err))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    accelerator.wait_for_everyone()
    report(accelerator, checkpoints=[step for step, _ in list_checkpoints(out)],
           left=sorted(p.name for p in out.iterdir()))

    started = time.monotonic()
    if accelerator.is_main_process:
        time.sleep(DEFAULT_TIMEOUT_S + 2)  # the main process's end-of-training work, longer than the timeout
    end_barrier.wait()
    report(accelerator, end_wait_s=round(time.monotonic() - started, 1))
    accelerator.end_training()
