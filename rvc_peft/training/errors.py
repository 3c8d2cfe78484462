"""Errors raised by the training loop; every message says what went wrong and what to do about it."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or continue (base class of the errors below)."""


class TrainingSetupError(TrainingError, ValueError):
    """Bad arguments or inputs found before the first step: a missing dataset, a base that does not fit it, ..."""


class NonFiniteLossError(TrainingError):
    """A loss, a gradient norm or a trainable weight became NaN or infinite; training stopped without saving the
    broken state (every checkpoint on disk passed this check)."""


class CheckpointSaveError(TrainingError):
    """A checkpoint could not be written (disk full, permissions); the previous checkpoints are intact."""


class OutOfMemoryError(TrainingError):
    """The accelerator or the host ran out of memory during a step."""
