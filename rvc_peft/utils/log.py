"""Log output for programs built on rvc_peft (the `rvc-peft` command, training runs): rvc_peft's own loggers only.

Imports nothing heavy (tqdm on first use), so the CLI can call it before torch loads.
"""

from __future__ import annotations

import logging
import sys

DEFAULT_FORMAT = "%(levelname)s %(message)s"


class TqdmLogHandler(logging.StreamHandler):
    """Writes log lines with `tqdm.write`, so that a line logged while a progress bar runs gets a line of its own
    (the bar is redrawn below it) instead of being glued onto the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)


def configure_logging(verbose: bool = False, quiet: bool = False, fmt: str = DEFAULT_FORMAT) -> logging.Logger:
    """Show rvc-peft's own log lines on stderr (through tqdm) at INFO, DEBUG (`verbose`) or WARNING (`quiet`).

    Only the "rvc_peft" logger is configured (and stops propagating, so a root handler does not print its lines a
    second time); the root logger is left alone, so third-party INFO chatter (faiss's "Could not load library with
    AVX512 support", ...) stays hidden. Calling it again replaces the handler it added before.
    """
    logger = logging.getLogger("rvc_peft")
    for handler in [h for h in logger.handlers if isinstance(h, TqdmLogHandler)]:
        logger.removeHandler(handler)
    handler = TqdmLogHandler()
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    return logger


def is_configured() -> bool:
    """True when someone already decided where log lines go: a handler on the "rvc_peft" logger or on the root."""
    return bool(logging.getLogger("rvc_peft").handlers or logging.getLogger().handlers)
