"""The web app in a real browser (headless Chromium via Playwright): upload, convert with two voices, blend, bad
input, two tabs at once, and a training run started from the page. Skipped only when no browser can be found.

Every returned audio is fetched the way the browser's download link fetches it and compared with the library's own
conversion of the same input (same seed and settings): the page must hand back exactly what `VoiceConverter` makes.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .conftest import SENTENCES, speak

pytestmark = pytest.mark.slow  # a browser and an app server: more than 10 s in all
CONVERT_TIMEOUT_MS = 120_000


def open_page(browser, app):
    """A new tab on the app, with the Convert tab's F0 method set to pm (the fastest; the default is harvest)."""
    page = browser.new_page()
    page.external_requests = []  # anything fetched from another host: the app must work offline
    page.on("request", lambda request: None if request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else page.external_requests.append(request.url))
    page.goto(app.blocks.local_url)
    page.wait_for_selector("#convert-button")
    choose(page, "convert-f0", "pm")
    return page


def choose(page, elem_id: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown with this elem_id."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).filter(visible=True).first.click()


def upload(page, elem_id: str, path: Path) -> None:
    """Upload a file into an audio input (clearing the one it holds, as a user clicks its ×)."""
    if page.locator(f"#{elem_id} input[type=file]").count() == 0:
        page.locator(f"#{elem_id} button[aria-label='Clear'], #{elem_id} button[title='Clear']").first.click()
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.wait_for_timeout(500)


def wait_status(page, elem_id: str, pattern: str, timeout: int = CONVERT_TIMEOUT_MS) -> str:
    """Wait until the status Markdown matches `pattern` (regex); returns its text."""
    locator = page.locator(f"#{elem_id}")
    locator.filter(has_text=re.compile(pattern)).wait_for(timeout=timeout)
    return locator.inner_text()


def fetch_result(page, elem_id: str = "convert-output") -> tuple[np.ndarray, int]:
    """Download the audio shown in an output component through its download link."""
    link = page.locator(f"#{elem_id} a[download]").first
    link.wait_for(state="attached", timeout=30_000)
    response = page.request.get(link.get_attribute("href"))
    assert response.ok, response.status
    audio, rate = sf.read(io.BytesIO(response.body()), dtype="float32")
    return audio, rate


def convert_in_page(page, voice: str, previous: str | None = None) -> tuple[np.ndarray, int]:
    choose(page, "convert-voice", voice)
    page.locator("#convert-button").click()
    wait_status(page, "convert-status", rf"Converted with {voice}:")
    if previous is not None:  # the link updates with the status; make sure it is the new file
        page.wait_for_function(f"() => !document.querySelector('#convert-output a[download]').href.endsWith("
                               f"{previous!r})")
    return fetch_result(page)


def library_result(app, path: Path, voice: str) -> np.ndarray:
    """The library's conversion with the page's settings (defaults, F0 method pm), as the PCM-16 file it writes."""
    audio, _ = app.studio.converter.convert(str(path), voice=voice, f0_method="pm", index_rate=0.0,
                                            protect=0.33, rms_mix_rate=0.25)
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16) / 32768.0


def href_name(page) -> str:
    return page.locator("#convert-output a[download]").first.get_attribute("download")


def test_convert_two_voices_then_blend(app, browser, assets):
    page = open_page(browser, app)
    loads = app.studio.base_loads
    page.get_by_role("tab", name="Voices").click()
    page.locator("#add-source textarea, #add-source input").first.fill(str(assets["alice"]))
    page.locator("#add-button").click()
    wait_status(page, "voices-status", r"Added voice alice")
    assert "alice" in page.locator("#voice-table").inner_text()

    page.get_by_role("tab", name="Convert").click()
    upload(page, "convert-input", assets["speech"])
    alice, rate = convert_in_page(page, "alice")
    alice_name = href_name(page)
    bob, bob_rate = convert_in_page(page, "bob", previous=alice_name)
    source_seconds = sf.info(assets["speech"]).duration
    assert rate == bob_rate == 32000
    assert abs(len(alice) / rate - source_seconds) < 0.05 and len(alice) == len(bob)
    np.testing.assert_allclose(alice, library_result(app, assets["speech"], "alice"), atol=1.5 / 32768)
    np.testing.assert_allclose(bob, library_result(app, assets["speech"], "bob"), atol=1.5 / 32768)
    assert np.abs(alice - bob).mean() > 1e-3, "two voices gave the same audio"
    assert page.locator("#convert-figure img").count() == 1  # the comparison figure is shown

    page.get_by_role("tab", name="Voices").click()
    choose(page, "blend-voice-0", "alice")
    choose(page, "blend-voice-1", "bob")
    page.locator("#blend-name textarea, #blend-name input").first.fill("alibob")
    page.locator("#blend-button").click()
    wait_status(page, "voices-status", r"Blended alibob")
    table = page.locator("#voice-table").inner_text()
    assert "alibob" in table and "blend of" in table
    page.get_by_role("tab", name="Convert").click()
    blended, _ = convert_in_page(page, "alibob", previous=href_name(page))
    np.testing.assert_allclose(blended, library_result(app, assets["speech"], "alibob"), atol=1.5 / 32768)
    assert min(np.abs(blended - alice).mean(), np.abs(blended - bob).mean()) > 1e-3
    assert app.studio.base_loads == loads == 1, "adding, switching or blending voices reloaded the base"
    assert "loaded 1×" in page.locator("#bank-summary").inner_text()
    assert page.external_requests == []  # no fonts, scripts or analytics from the internet
    page.close()


def test_bad_input_shows_a_message_not_a_traceback(app, browser, assets):
    page = open_page(browser, app)
    upload(page, "convert-input", assets["text"])  # the page itself refuses it, with a message
    page.get_by_text("Invalid file type: notes.txt").wait_for(timeout=10_000)
    page.locator("#convert-button").click()
    wait_status(page, "convert-status", r"No audio yet: upload a file or record")
    upload(page, "convert-input", assets["fake_wav"])  # passes the page's check, not the server's
    page.locator("#convert-button").click()
    assert "fake.wav could not be read as audio" in wait_status(page, "convert-status", r"could not be read")
    upload(page, "convert-input", assets["silence"])
    page.locator("#convert-button").click()
    assert "silence.wav is silent" in wait_status(page, "convert-status", r"is silent")

    page.get_by_role("tab", name="Voices").click()
    page.locator("#add-source textarea, #add-source input").first.fill(str(assets["foreign"]))
    page.locator("#add-button").click()
    text = wait_status(page, "voices-status", r"⚠️")
    assert "foreign" in text and "was made for" in text, text
    assert "foreign" not in app.studio.voice_names()
    page.locator("#add-source textarea, #add-source input").first.fill(str(assets["text"].parent / "missing"))
    page.locator("#add-button").click()
    wait_status(page, "voices-status", r"missing")
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and 'File "' not in body
    page.close()


def test_two_tabs_convert_at_once(app, browser, assets, tmp_path):
    other = speak(tmp_path / "other.wav", SENTENCES[1], voice="en+m3")
    if "alice" not in app.studio.voice_names():  # when this test runs alone
        app.studio.add_voice(str(assets["alice"]))
    pages = [open_page(browser, app), open_page(browser, app)]
    jobs = [(pages[0], assets["speech"], "bob"), (pages[1], other, "alice")]
    for page, path, voice in jobs:
        upload(page, "convert-input", path)
        choose(page, "convert-voice", voice)
    for page, _, _ in jobs:  # both requests are in flight together
        page.locator("#convert-button").click()
    for page, path, voice in jobs:
        wait_status(page, "convert-status", rf"Converted with {voice}:")
        audio, rate = fetch_result(page)
        assert rate == 32000
        np.testing.assert_allclose(audio, library_result(app, path, voice), atol=1.5 / 32768)
        page.close()


def test_train_from_the_page_adds_the_voice(app, browser, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for i, sentence in enumerate(SENTENCES):
        speak(recordings / f"take{i}.wav", sentence, voice="en+f3")
    page = open_page(browser, app)
    page.get_by_role("tab", name="Train").click()
    for elem_id, value in (("train-recordings", str(recordings)), ("train-name", "fresh"), ("train-steps", "2"),
                           ("train-batch", "2"), ("train-rank", "2"), ("train-every", "2")):
        page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)
    choose(page, "train-f0", "pm")
    page.locator("#train-check input").uncheck()  # the end-of-training reload check: 20 s more on 2 cores
    page.locator("#train-start").click()
    wait_status(page, "train-status", r"fresh.*(preprocessing|training)", timeout=30_000)
    wait_status(page, "train-status", r"finished|failed", timeout=300_000)
    status = page.locator("#train-status").inner_text()
    assert "finished" in status, f"{status}\n{page.locator('#train-log textarea').input_value()}"
    assert "fresh" in app.studio.voice_names()
    page.get_by_role("tab", name="Voices").click()
    page.locator("#voice-table").filter(has_text="fresh").wait_for(timeout=10_000)
    assert app.job.validation_audio is not None and app.job.validation_audio.is_file()
    assert any(tag.startswith("loss/g/") for tag in app.job.losses)
    assert app.studio.base_loads == 1
    page.close()
