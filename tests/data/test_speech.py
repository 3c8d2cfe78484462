"""Real speech from espeak-ng / flite (installed in CI; skipped cleanly where missing) through the slicer and the
dataset builder."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.data import Slicer, build_dataset, load_rvc_dataset
from rvc_peft.data.cutting import highpass
from rvc_peft.features.audio import load_audio

SR = 40000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")


def _espeak(path, text, pitch=50):
    subprocess.run(["espeak-ng", "-v", "en-us", "-p", str(pitch), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def _flite(path, text, voice="slt"):
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path


@needs_espeak
def test_slicer_cuts_speech_at_an_inserted_pause(tmp_path):
    first = load_audio(_espeak(tmp_path / "a.wav", "Hello there, this is the first sentence of the test."), SR)
    second = load_audio(_espeak(tmp_path / "b.wav", "And here comes the second one, after a long pause."), SR)
    gap_start = len(first)
    audio = np.concatenate([first, np.zeros(int(1.5 * SR), np.float32), second])
    gap_end = gap_start + int(1.5 * SR)
    positions = Slicer(SR).slice_positions(highpass(audio, SR))
    assert len(positions) >= 2
    # exactly one cut falls in the inserted pause: a chunk ends inside it and the next starts inside it, keeping
    # at most 0.5 s (+ half an RMS window) of silence before the second sentence
    ends_in_gap = [k for k, (_, end) in enumerate(positions) if gap_start - 0.6 * SR <= end <= gap_end]
    assert len(ends_in_gap) == 1
    next_start = positions[ends_in_gap[0] + 1][0]
    assert gap_end - 0.55 * SR <= next_start <= gap_end
    # nothing loud is thrown away: every sample louder than -30 dB lies inside some chunk
    loud = np.flatnonzero(np.abs(audio) > 10 ** (-30 / 20))
    kept = np.zeros(len(audio), bool)
    for start, end in positions:
        kept[start:end] = True
    assert kept[loud].all()


@pytest.mark.skipif(shutil.which("espeak-ng") is None and shutil.which("flite") is None,
                    reason="neither espeak-ng nor flite is installed")
def test_builder_on_tts_speech(tmp_path, tiny_encoder):
    audio_dir = tmp_path / "speech"
    (audio_dir / "1").mkdir(parents=True)
    made = []
    if shutil.which("espeak-ng"):
        made.append(_espeak(audio_dir / "espeak.wav", "Voice conversion needs a few minutes of clean speech.", 40))
    if shutil.which("flite"):
        made.append(_flite(audio_dir / "1" / "flite.wav", "The quick brown fox jumps over the lazy dog twice."))
    info = build_dataset(audio_dir, tmp_path / "out", sample_rate="40k", version="v1", f0_method="pm",
                         content_encoder=tiny_encoder, progress=False)
    assert info.skipped == [] and info.num_rows >= len(made)
    dataset, _ = load_rvc_dataset(tmp_path / "out")
    rows = list(dataset.with_format("numpy"))
    assert {r["source_file"] for r in rows} == {p.relative_to(audio_dir).as_posix() for p in made}
    for row in rows:
        assert row["speaker_id"] == (1 if row["source_file"].startswith("1/") else 0)
        frames = row["phone"].shape[0]
        assert abs(len(row["pitchf"]) - 2 * frames) <= 3 and abs(len(row["audio"]) - 2 * frames * 400) <= 1200
        voiced = row["pitchf"][row["pitchf"] > 0]
        assert len(voiced) > 0.2 * len(row["pitchf"])  # speech is largely voiced
        assert 60 < np.median(voiced) < 350  # an adult TTS voice
        assert 0.675 < np.abs(row["audio"]).max() <= 0.925


@needs_flite
def test_flite_native_rate_is_read(tmp_path):
    path = _flite(tmp_path / "x.wav", "Testing one two three.", "kal16")
    info = sf.info(path)
    audio = load_audio(path, SR)
    assert abs(len(audio) - round(info.frames * SR / info.samplerate)) <= 1
