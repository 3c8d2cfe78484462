"""Training from the web app: preprocessing and LoRA training in background processes, watched live.

A `TrainingJob` runs the same commands a user runs (`python -m rvc_peft.cli preprocess ...`, then
`python -m rvc_peft.train ...`) as child processes of the app, one after the other, in a thread. It follows them
through what they write:

- the progress bar on stderr (tqdm's `step/total` and `loss_g=`), for the step count while training;
- the TensorBoard event file under `<output_dir>/logs/rvc-peft` (accelerate's tracker), for the loss curves and the
  validation audio, which the trainer logs at every `--validation_steps`.

Stop sends SIGTERM: the trainer finishes its step, saves a checkpoint and exits (`rvc_peft.training.guards`);
resume starts the trainer again with `--resume_from_checkpoint latest` (preprocessing reuses its cache). When the
trainer finishes, `on_finished(output_dir, name)` is called: the app adds the adapter to its voice bank.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .state import AUDIO_SUFFIXES, AppError

_TQDM_STEP = re.compile(r"steps:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
_VALIDATION_TAG = "validation/"


@dataclass
class TrainingSettings:
    """What the Train tab asks for; the rest is the recipe of `examples/demo.py` (mel_kl loss, constant LR)."""

    recordings: str
    name: str
    steps: int = 200
    batch_size: int = 4
    rank: int = 8
    learning_rate: float = 5e-4
    f0_method: str = "harvest"
    validation_every: int = 50
    final_check: bool = True  # the trainer's end-of-training reload-and-convert check (skip it for quick trials)


def check_recordings(folder: str | os.PathLike) -> list[Path]:
    """The audio files in a recordings folder; `AppError` when it is missing or holds none."""
    folder = Path(str(folder).strip()).expanduser()
    if not str(folder).strip() or not folder.is_dir():
        raise AppError(f"{folder}: not a folder; enter the folder that holds your recordings (wav, flac, mp3 ...)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AppError(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


class TrainingJob:
    """One preprocessing + training run in child processes (see the module docstring).

    `state` goes "preprocessing" -> "training" -> "finished" (or "stopped" / "failed"); `step`, `total_steps`,
    `losses` ({tag: [(step, value)]}), `validation_audio` (path of the newest validation clip) and `log` (the last
    output lines) describe it while it runs.
    """

    def __init__(self, settings: TrainingSettings, *, base: str, content_encoder: str, work_dir: str | os.PathLike,
                 sample_rate: str = "32k", version: str = "v2",
                 on_finished: Callable[[Path, str], None] | None = None) -> None:
        name = settings.name.strip()
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
            raise AppError(f"voice name {settings.name!r}: use letters, digits, '-' and '_' only")
        if settings.steps < 1 or settings.batch_size < 1 or settings.rank < 1:
            raise AppError("steps, batch size and rank must be at least 1")
        self.recordings = check_recordings(settings.recordings)
        self.settings = settings
        self.base = base
        self.content_encoder = content_encoder
        self.sample_rate, self.version = sample_rate, version  # of the base: the dataset must match it
        self.folder = Path(work_dir) / "training" / name
        self.dataset_dir = self.folder / "dataset"
        self.output_dir = self.folder / "adapter"
        self.on_finished = on_finished
        self.state = "created"
        self.message = ""
        self.step = 0
        self.total_steps = settings.steps
        self.losses: dict[str, list[tuple[int, float]]] = {}
        self.validation_audio: Path | None = None
        self.log: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._events_seen = 0.0  # mtime of the event file when last read

    # --- control ----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, resume: bool = False) -> None:
        """Start (or with `resume=True` continue from the last checkpoint) in a background thread."""
        if self.running:
            raise AppError(f"the training of {self.settings.name!r} is already running")
        if resume and not any(self.output_dir.glob("checkpoint-*")):
            raise AppError(f"{self.output_dir} has no checkpoint to resume from; start a new run instead")
        self._stop_requested = False
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, args=(resume,), name=f"train-{self.settings.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the running process to stop: the trainer saves a checkpoint first (resume continues from it)."""
        self._stop_requested = True
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's thread ends; True if it did within `timeout`."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # --- the work ---------------------------------------------------------------------------------------------
    def commands(self, resume: bool = False) -> tuple[list[str], list[str]]:
        """The preprocessing and training command lines this job runs (child processes of this Python)."""
        s = self.settings
        preprocess = [sys.executable, "-m", "rvc_peft.cli", "preprocess", str(Path(s.recordings).expanduser()),
                      str(self.dataset_dir), "--sample-rate", self.sample_rate, "--version", self.version,
                      "--f0-method", s.f0_method,
                      "--content-encoder", self.content_encoder, "--no-progress"]
        every = max(1, min(s.validation_every, s.steps))
        train = [sys.executable, "-m", "rvc_peft.train", "--pretrained_model_name_or_path", self.base,
                 "--train_data_dir", str(self.dataset_dir), "--output_dir", str(self.output_dir),
                 "--train_batch_size", str(s.batch_size), "--max_train_steps", str(s.steps),
                 "--learning_rate", str(s.learning_rate), "--rank", str(s.rank), "--train_speaker_embedding",
                 "--loss", "mel_kl", "--lr_scheduler", "constant", "--checkpointing_steps", str(every),
                 "--checkpoints_total_limit", "1", "--validation_steps", str(every), "--num_validation_clips", "1",
                 "--logging_steps", "1", "--report_to", "tensorboard"]
        if not s.final_check:
            train.append("--skip_final_validation")
        if resume:
            train += ["--resume_from_checkpoint", "latest"]
        return preprocess, train

    def _run(self, resume: bool) -> None:
        preprocess, train = self.commands(resume)
        try:
            self.state = "preprocessing"
            self.message = f"preprocessing {len(self.recordings)} recording(s)"
            if self._call(preprocess) != 0:
                return self._failed("preprocessing")
            if self._stop_requested:
                self.state, self.message = "stopped", "stopped before training"
                return None
            self.state = "training"
            self.message = "loading the base and starting training"
            code = self._call(train)
            self._read_events()
            if self._stop_requested:
                self.state = "stopped"
                self.message = f"stopped at step {self.step}; resume continues from the last checkpoint"
                return None
            if code != 0:
                return self._failed("training")
            self.step = self.total_steps
            self.message = f"finished {self.total_steps} steps; adapter in {self.output_dir}"
            if self.on_finished is not None:
                self.on_finished(self.output_dir, self.settings.name)
                self.message += f"; added to the voice bank as {self.settings.name!r}"
            self.state = "finished"
        except Exception as err:  # noqa: BLE001 - the thread must end in a state the UI can show
            self.state, self.message = "failed", f"{type(err).__name__}: {err}"
        return None

    def _failed(self, what: str) -> None:
        errors = [line for line in self.log if "error" in line.lower()]
        detail = errors[-1] if errors else (self.log[-1] if self.log else "no output")
        self.state, self.message = "failed", f"{what} failed: {detail}"

    def _call(self, command: list[str]) -> int:
        """Run one child process, following its output line by line (tqdm's \\r updates count as lines)."""
        env = {**os.environ, "ACCELERATE_USE_CPU": os.environ.get("ACCELERATE_USE_CPU", "1"),
               "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "0"}
        self.log.append("$ " + " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)))
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                         cwd=str(self.folder.parent) if self.folder.parent.exists() else None)
        stream = self._process.stdout
        buffer = b""
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for raw in lines:
                self._line(raw.decode("utf-8", "replace").strip())
        self._line(buffer.decode("utf-8", "replace").strip())
        return self._process.wait()

    def _line(self, line: str) -> None:
        if not line:
            return
        found = _TQDM_STEP.findall(line)
        if found:
            self.step, self.total_steps = int(found[-1][0]), int(found[-1][1])
            self.message = f"training: step {self.step} of {self.total_steps}"
            if not self.log or not _TQDM_STEP.search(self.log[-1]):
                self.log.append(line)
            else:
                self.log[-1] = line  # one line for the progress bar, as a terminal shows it
            return
        self.log.append(line)

    # --- live view ----------------------------------------------------------------------------------------------
    def _events_folder(self) -> Path:
        return self.output_dir / "logs" / "rvc-peft"

    def _read_events(self) -> None:
        """Reload losses and the newest validation audio from the TensorBoard event files, when they changed."""
        files = sorted(self._events_folder().glob("events.out.tfevents.*"))
        if not files:
            return
        newest = max(f.stat().st_mtime for f in files)
        if newest <= self._events_seen:
            return
        self._events_seen = newest
        from tensorboard.backend.event_processing.event_accumulator import AUDIO, SCALARS, EventAccumulator

        losses: dict[str, list[tuple[int, float]]] = {}
        best_audio: tuple[int, Any] | None = None
        for events_file in files:  # one file per run (a resumed run starts a new one)
            accumulator = EventAccumulator(str(events_file), size_guidance={SCALARS: 0, AUDIO: 1})
            accumulator.Reload()
            tags = accumulator.Tags()
            for tag in tags.get("scalars", []):
                if tag.startswith(("loss/", "validation/")):
                    losses.setdefault(tag, []).extend((e.step, float(e.value)) for e in accumulator.Scalars(tag))
            for tag in tags.get("audio", []):
                if tag.startswith(_VALIDATION_TAG):
                    for event in accumulator.Audio(tag):
                        if best_audio is None or event.step >= best_audio[0]:
                            best_audio = (event.step, event)
        self.losses = {tag: sorted(dict(points).items()) for tag, points in losses.items()}
        if best_audio is not None:
            step, event = best_audio
            path = self.folder / f"validation-step{step}.wav"
            if not path.exists():
                from ..utils.files import atomic_write

                atomic_write(path, lambda tmp: Path(tmp).write_bytes(event.encoded_audio_string))
            self.validation_audio = path

    def snapshot(self) -> dict[str, Any]:
        """What the Train tab shows now: state, message, step, total, losses, validation audio and the log tail."""
        if self.state == "training" or self.state in ("finished", "stopped"):
            try:
                self._read_events()
            except Exception as err:  # noqa: BLE001 - a half-written event file: try again at the next poll
                self.log.append(f"(could not read the training logs yet: {type(err).__name__})")
        return {"state": self.state, "message": self.message, "step": self.step, "total": self.total_steps,
                "losses": dict(self.losses), "validation_audio": self.validation_audio,
                "log": "\n".join(list(self.log)[-40:])}


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `condition` until true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
