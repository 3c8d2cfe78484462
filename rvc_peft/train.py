"""Train an RVC voice LoRA adapter from any folder: `python -m rvc_peft.train ...`, `accelerate launch -m
rvc_peft.train ...` or the `rvc-peft-train` command (all the same options as `rvc-peft train`; `--help` lists them).

`train_accelerate.py` at the repository root is a shell over `run()`; this module is what works once the package is
installed, wherever the command is started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _prog() -> str | None:
    """How the user started us, for usage lines: `python -m rvc_peft.train` runs this file as sys.argv[0]."""
    if sys.argv and sys.argv[0].endswith(("rvc_peft/train.py", "rvc_peft\\train.py")):
        return "python -m rvc_peft.train"
    return None  # argparse's default: the script's name (rvc-peft-train, train_accelerate.py)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`), train, and return the exit status: 0 done, 1 a setup or training
    error (printed as one `error: ...` line, no traceback), 130 stopped by Ctrl-C/SIGTERM after saving a checkpoint.
    Bad options exit with argparse's status 2."""
    from .training.arguments import build_parser

    return train_parsed(build_parser(_prog()).parse_args(argv))


def train_parsed(args: argparse.Namespace, error_prefix: str = "error") -> int:
    """Check and train from already-parsed options (also `rvc-peft train`); returns the exit status as `run`.
    A missing path, setup or training error is printed as one `<error_prefix>: ...` line."""
    from .utils.hub import LocalPathNotFoundError, check_path_options

    try:  # a mistyped path fails at once, before torch loads
        check_path_options(args, references=("pretrained_model_name_or_path", "pretrained_discriminator"),
                           local=("train_data_dir",))
    except LocalPathNotFoundError as err:
        print(f"{error_prefix}: {err}", file=sys.stderr)
        return 1
    from .training import TrainingError, check_args, main

    try:
        result = main(check_args(args))
    except TrainingError as err:
        print(f"{error_prefix}: {err}", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0


def entry_point() -> None:
    """The `rvc-peft-train` console script."""
    sys.exit(run())


if __name__ == "__main__":
    entry_point()
