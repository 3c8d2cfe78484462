"""The rvc-peft web app: convert, manage, blend, train and compare LoRA voices in the browser (Gradio).

    rvc-peft app                      # the voice-lab base, http://127.0.0.1:7860
    python -m rvc_peft.app --voice adapters/alice --voice user/bob-rvc-lora --port 7861

Modules: `state` (the `Studio`: one base, its voice bank, conversions and exports, no UI), `training_jobs`
(preprocessing and training in child processes, followed live), `ui` (the Gradio page), `launch` (command line).
Importing this package imports neither Gradio nor torch; `pip install "rvc-peft[app]"` brings Gradio.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """`rvc-peft app` / `python -m rvc_peft.app`: parse the options and serve the app until interrupted."""
    from .launch import main as launch_main

    return launch_main(argv)


__all__ = ["main"]
