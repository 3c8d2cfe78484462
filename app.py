"""Hugging Face Space entry point: the rvc-peft web app on the voice-lab base (see the README's "Web app").

A Gradio Space runs `python app.py`; the Space's requirements.txt installs rvc-peft with its `app` extra.
`RVC_PEFT_VOICES` (comma-separated adapter folders or Hub ids) preloads voices; Spaces set GRADIO_SERVER_NAME/PORT.
"""

import os
import sys

from rvc_peft.app import main

if __name__ == "__main__":
    voices = [v.strip() for v in os.environ.get("RVC_PEFT_VOICES", "").split(",") if v.strip()]
    sys.exit(main([arg for voice in voices for arg in ("--voice", voice)]))
