"""Screenshots of the web app's four tabs for the README (docs/screenshots/*.png), taken in headless Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--steps 4]

Everything is offline: espeak-ng speaks the input and four "recordings", two demonstration voices are adapters
with seeded random LoRA weights on the voice-lab base (they sound different, not like anyone), a blend of them is
made in the Voices tab, and the Train tab runs a short real training (`--steps`) on the recordings. Needs the
`app` extra, Debian's `chromium` and `espeak-ng`. Takes about two minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCE_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."
RECORDINGS = ["She sells sea shells by the sea shore on a sunny summer morning.",
              "A short walk in the park makes every afternoon a little brighter.",
              "Rain on the window sounds like a soft and steady drum.",
              "Bring the blue book and the green pen to the kitchen table."]


def speak(path: Path, text: str, voice: str) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


def demo_adapter(folder: Path, seed: int, rank: int) -> Path:
    """A LoRA adapter on the voice-lab base with seeded random B weights (a stand-in for a trained voice)."""
    import torch

    from rvc_peft.checkpoints import load_synthesizer
    from rvc_peft.lab import lab_base_files
    from rvc_peft.testing import randomize_lora
    from rvc_peft.tuners import RVCLoraConfig
    from rvc_peft.tuners.api import get_rvc_peft_model

    torch.manual_seed(seed)  # PEFT draws the A factors from torch's RNG: the same voices on every run
    model = get_rvc_peft_model(load_synthesizer(lab_base_files().synthesizer), RVCLoraConfig(r=rank))
    randomize_lora(model, seed=seed, scale=0.05, parameters="lora_B")
    model.save_pretrained(str(folder))
    return folder


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).filter(visible=True).first.click()


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--steps", type=int, default=4, help="training steps of the Train tab's run (default 4)")
    args = parser.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None or shutil.which("espeak-ng") is None:
        sys.exit("needs chromium and espeak-ng (apt-get install chromium espeak-ng)")
    from playwright.sync_api import sync_playwright

    from rvc_peft.app.state import Studio
    from rvc_peft.app.ui import build_app, launch

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rvc-peft-screens-") as tmp:
        work = Path(tmp)
        source = speak(work / "source.wav", SOURCE_TEXT, "en+m3")
        recordings = work / "my_recordings"
        recordings.mkdir()
        for i, text in enumerate(RECORDINGS):
            speak(recordings / f"take{i}.wav", text, "en+f3")
        studio = Studio(work_dir=work / "app")
        studio.add_voice(str(demo_adapter(work / "alice", seed=1, rank=8)))
        studio.add_voice(str(demo_adapter(work / "bob", seed=2, rank=4)))
        app = build_app(studio)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        launch(app, host="127.0.0.1", port=port, block=False)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app.blocks.local_url)
            page.wait_for_selector("#convert-button")

            page.get_by_role("tab", name="Voices").click()
            choose(page, "blend-voice-0", "alice")
            choose(page, "blend-voice-1", "bob")
            fill(page, "blend-name", "alice_bob")
            page.locator("#blend-button").click()
            page.locator("#voices-status").filter(has_text="Blended").wait_for(timeout=60_000)
            page.screenshot(path=str(args.out / "voices.png"), full_page=True)

            page.get_by_role("tab", name="Convert").click()
            page.locator("#convert-input input[type=file]").set_input_files(str(source))
            choose(page, "convert-voice", "alice_bob")
            choose(page, "convert-f0", "pm")
            page.locator("#convert-button").click()
            page.locator("#convert-status").filter(has_text="Converted with").wait_for(timeout=120_000)
            page.wait_for_timeout(1500)  # the figure and waveform finish drawing
            page.screenshot(path=str(args.out / "convert.png"), full_page=True)

            page.get_by_role("tab", name="Compare").click()
            page.locator("#compare-input input[type=file]").set_input_files(str(source))
            for voice in ("alice", "bob", "alice_bob"):
                choose(page, "compare-voices", voice)
            page.keyboard.press("Escape")
            choose(page, "compare-f0", "pm")
            page.locator("#compare-button").click()
            page.locator("#compare-status").filter(has_text="Compared").wait_for(timeout=180_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / "compare.png"), full_page=True)

            page.get_by_role("tab", name="Train").click()
            fill(page, "train-recordings", str(recordings))
            fill(page, "train-name", "my_voice")
            for elem_id, value in (("train-steps", args.steps), ("train-batch", 2), ("train-every", 2)):
                fill(page, elem_id, str(value))
            choose(page, "train-f0", "pm")
            page.locator("#train-check input").uncheck()
            page.locator("#train-start").click()
            page.locator("#train-status").filter(has_text="finished").wait_for(timeout=600_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(args.out / "train.png"), full_page=True)
            browser.close()
        app.blocks.close()
    print(f"screenshots in {args.out}: " + ", ".join(sorted(p.name for p in args.out.glob("*.png"))))


if __name__ == "__main__":
    main()
