"""Fixtures of the web-app tests: speech, adapters on the voice-lab base, a running app and a headless browser.

The adapters are "trained" by seeded random LoRA B weights on the real voice-lab base (`rvc_peft.testing`), so
they load, switch, blend and change the output like trained ones without a training run. The speech comes from
espeak-ng (Debian package), the way `examples/demo.py` speaks its offline voices.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SENTENCES = ["The quick brown fox jumps over the lazy dog near the quiet river bank.",
             "She sells sea shells by the sea shore on a sunny summer morning.",
             "A short walk in the park makes every afternoon a little brighter."]


def speak(path: Path, text: str, voice: str = "en") -> Path:
    """Speak `text` with espeak-ng into a wav file (skips the test when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; scripts/setup.sh does it)")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def make_adapter(folder: Path, seed: int, *, base=None, rank: int = 4) -> Path:
    """Save a LoRA adapter with seeded random B weights on `base` (default: the voice-lab base)."""
    from rvc_peft.checkpoints import load_synthesizer
    from rvc_peft.lab import lab_base_files
    from rvc_peft.testing import randomize_lora
    from rvc_peft.tuners import RVCLoraConfig
    from rvc_peft.tuners.api import get_rvc_peft_model

    torch.manual_seed(seed)  # PEFT draws the A factors from torch's RNG
    model = get_rvc_peft_model(base if base is not None else load_synthesizer(lab_base_files().synthesizer),
                               RVCLoraConfig(r=rank))
    randomize_lora(model, seed=seed, scale=0.05, parameters="lora_B")
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Input speech, a silent wav, a text file (also as fake.wav), adapters alice/bob (lab base, ranks 4 and 2) and
    one made for another base."""
    from rvc_peft.testing import random_synthesizer, small_config

    root = tmp_path_factory.mktemp("app-assets")
    files = {"speech": speak(root / "speech.wav", SENTENCES[0]),
             "alice": make_adapter(root / "alice", seed=1, rank=4),
             "bob": make_adapter(root / "bob", seed=2, rank=2),
             "foreign": make_adapter(root / "foreign", seed=3, base=random_synthesizer(small_config(
                 sampling_rate=32000)))}
    sf.write(root / "silence.wav", np.zeros(32000, dtype=np.float32), 16000)
    files["silence"] = root / "silence.wav"
    (root / "notes.txt").write_text("this is not audio\n")
    files["text"] = root / "notes.txt"
    (root / "fake.wav").write_text("a text file with an audio name\n")
    files["fake_wav"] = root / "fake.wav"
    return files


def find_browser() -> str | None:
    """A Chromium executable: $RVC_PEFT_BROWSER, Debian's chromium, or another Chromium/Chrome on PATH."""
    candidates = [os.environ.get("RVC_PEFT_BROWSER"), "chromium", "chromium-browser", "google-chrome", "chrome"]
    for name in filter(None, candidates):
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Playwright, using the system's browser (nothing is downloaded)."""
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium found for the browser tests (apt-get install chromium, or set RVC_PEFT_BROWSER; "
                    "scripts/setup.sh installs it as root on Debian)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('playwright is not installed (pip install "rvc-peft[app]")')
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def app(assets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The app on a free local port, in this process (so tests can look at its `Studio`), with bob preloaded."""
    pytest.importorskip("gradio", reason='Gradio is not installed (pip install "rvc-peft[app]")')
    from rvc_peft.app.state import Studio
    from rvc_peft.app.ui import build_app, launch

    studio = Studio(work_dir=tmp_path_factory.mktemp("app-work"))
    studio.add_voice(str(assets["bob"]))
    ui = build_app(studio)
    with socket.socket() as probe:  # a free port: never collide with an app the developer is running
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch(ui, host="127.0.0.1", port=port, block=False)
    yield ui
    ui.blocks.close()
