"""Command line of the web app (`rvc-peft app`, `python -m rvc_peft.app`, the Space's `app.py`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The app's options (shared by `rvc-peft app` and `python -m rvc_peft.app`)."""
    parser.add_argument("--base", default=None, help="RVC base G file or Hub reference (default: the voice-lab base "
                        "shipped with rvc-peft)")
    parser.add_argument("--content-encoder", default=None, help="content encoder of --base (needed with --base)")
    parser.add_argument("--voice", action="append", default=[], metavar="ADAPTER",
                        help="adapter folder or Hub id to load at start (repeatable; NAME=ADAPTER names it)")
    parser.add_argument("--work-dir", default=None, help="folder for results, exports and training runs "
                        "(default: a new temporary folder)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    return parser


def build_from_args(args: argparse.Namespace) -> Any:
    """A `Studio` with the requested base and voices, and its page (`AppUI`)."""
    from .state import Studio
    from .ui import build_app

    studio = Studio(args.base, args.content_encoder, args.work_dir)
    for item in args.voice:
        name, _, source = item.rpartition("=") if "=" in item and not os.path.exists(item) else ("", "", item)
        studio.add_voice(source, name or None)
    return build_app(studio)


def serve(args: argparse.Namespace) -> int:
    """Build the app from parsed options and serve it until Ctrl-C; returns the exit status (1: bad options)."""
    import sys

    try:
        import gradio  # noqa: F401
    except ImportError:
        print('rvc-peft app: error: Gradio is not installed; pip install "rvc-peft[app]"', file=sys.stderr)
        return 1
    from .state import AppError
    from .ui import launch

    try:
        app = build_from_args(args)
    except (AppError, ValueError, OSError) as err:
        print(f"rvc-peft app: error: {err}", file=sys.stderr)
        return 1
    print(f"rvc-peft app on http://{args.host}:{args.port} (Ctrl-C stops it); work folder {app.studio.work_dir}",
          flush=True)
    launch(app, host=args.host, port=args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rvc_peft.app`: parse the options, then `serve`."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m rvc_peft.app", description="the rvc-peft web app"))
    return serve(parser.parse_args(argv))
