"""SECS (Resemblyzer) and DNSMOS on espeak-ng speech and noise, `rvc-peft eval` with them, and the missing-package path.

Needs the `quality` extra plus `--no-deps resemblyzer` (scripts/setup.sh installs both); skipped only without espeak-ng.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.cli import main
from rvc_peft.features.audio import load_audio
from rvc_peft.features.synthetic import espeak_speech, voiced_signal
from rvc_peft.inference import evaluate, quality
from rvc_peft.inference.quality import QualityMetricsUnavailable, dnsmos, reference_embedding, speaker_similarity

SENTENCES = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "Voice conversion keeps the words and changes who seems to speak them."]
VOICES = ("en-us+m1", "en-us+f4")  # espeak-ng variants: a male and a female voice


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """{(voice, sentence index): path} of espeak-ng speech at its native 22050 Hz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no speech to score")
    root = tmp_path_factory.mktemp("speech")
    return {(voice, i): espeak_speech(text, root / voice / f"s{i}.wav", voice=voice)
            for voice in (*VOICES, "en-us") for i, text in enumerate(SENTENCES)}


def clip(path):
    return load_audio(path, 16000), 16000


def test_secs_same_voice_beats_different_voice(speech):
    same = speaker_similarity(*clip(speech["en-us+m1", 0]), [speech["en-us+m1", 1]])
    different = speaker_similarity(*clip(speech["en-us+m1", 0]), [speech["en-us+f4", 1]])
    assert same > 0.8 and different < 0.75 and same - different > 0.15, (same, different)  # measured 0.90 / 0.60
    audio, rate = clip(speech["en-us+f4", 0])
    assert speaker_similarity(audio, rate, [(audio, rate)]) == pytest.approx(1.0, abs=1e-5)


def test_secs_matches_resemblyzer_itself(speech):
    """Seed-VC's SECS: np.inner of embed_utterance(preprocess_wav(file)) of two files, with a separate encoder."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    a, b, c = speech["en-us+m1", 0], speech["en-us+f4", 1], speech["en-us+m1", 1]
    ea, eb, ec = (encoder.embed_utterance(preprocess_wav(p)) for p in (a, b, c))
    assert speaker_similarity(*clip(a), [b]) == pytest.approx(float(np.inner(ea, eb)), abs=1e-4)
    # several references: cosine to their normalised mean embedding; a folder, clips or the embedding agree
    mean = (eb + ec) / np.linalg.norm(eb + ec)
    expected = float(np.inner(ea, mean))
    assert speaker_similarity(*clip(a), [b, clip(c)]) == pytest.approx(expected, abs=1e-4)
    folder = b.parent.parent / "refs"
    folder.mkdir()
    shutil.copy(b, folder / "b.wav")
    shutil.copy(c, folder / "c.wav")
    assert speaker_similarity(*clip(a), folder) == pytest.approx(expected, abs=1e-4)
    assert speaker_similarity(*clip(a), reference_embedding(folder)) == pytest.approx(expected, abs=1e-4)


def test_dnsmos_separates_speech_from_noise(speech):
    audio, rate = clip(speech["en-us", 1])  # 4.9 s: tiled to 9.8 s, one DNSMOS window (4.5 s would need 9)
    scores = dnsmos(audio, rate)
    assert set(scores) == {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"}
    assert scores["dnsmos_ovrl"] >= 2.4, scores  # measured 2.86 (spec: espeak-ng 2.61-3.13)
    noise = np.random.default_rng(0).normal(0.0, 0.3, 40000)  # exceeds [-1, 1] here and there: clipped
    assert dnsmos(noise, 16000)["dnsmos_ovrl"] <= 1.5  # measured 1.07 (spec: 1.06-1.11)
    short = dnsmos(audio[: 19200], 16000)  # 1.2 s: tiled to 9.6 s the way DNSMOS does it (one 9.01 s window)
    assert 1.0 <= short["dnsmos_ovrl"] <= 5.0
    assert len(quality.tile_for_dnsmos(np.ones(16000 * 2))) == 16000 * 16


@pytest.mark.parametrize("bad", [np.zeros(16000), np.zeros(0), np.full(16000, 1e-6)])
def test_silent_or_empty_audio_is_refused(bad):
    with pytest.raises(ValueError, match="silent|non-empty"):
        dnsmos(bad, 16000)
    with pytest.raises(ValueError, match="silent|non-empty"):
        quality.speaker_embedding(bad, 16000)


def test_eval_command_writes_secs_and_dnsmos(speech, tmp_path, capsys):
    # "converted": voice m1 saying sentence 1; its source: voice f4 saying it; the target voice: m1, sentence 0
    voice = tmp_path / "voice"
    voice.mkdir()
    shutil.copy(speech["en-us+m1", 0], voice / "ref.wav")
    code = main(["eval", str(speech["en-us+m1", 1]), str(speech["en-us+f4", 1]), "--reference", str(voice),
                 "--json", str(tmp_path / "m.json"), "--figure", str(tmp_path / "m.png")])
    assert code == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved == json.loads(capsys.readouterr().out)
    assert saved["secs"] > 0.8 and saved["secs_source"] < 0.75  # near the target voice, far from the source
    assert 2.4 < saved["dnsmos_ovrl"] < 4.5 and 1.5 < saved["source_dnsmos_ovrl"] < 4.5  # measured 2.77, 2.11
    assert {"dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "mcd_db", "f0_rmse_cents"} <= set(saved)
    assert (tmp_path / "m.png").stat().st_size > 10_000
    # --no-quality: only the spectral/F0 metrics
    assert main(["eval", str(speech["en-us+m1", 1]), str(speech["en-us+f4", 1]), "--no-quality"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "mcd_db" in plain and not set(plain) & {"secs_source", "dnsmos_ovrl"}


def test_missing_packages_give_a_clear_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # `import resemblyzer` now fails
    monkeypatch.setitem(sys.modules, "speechmos", None)
    audio, _ = voiced_signal(150.0, 1.0, seed=1)
    with pytest.raises(QualityMetricsUnavailable) as info:
        speaker_similarity(audio, 16000, [(audio, 16000)])
    assert isinstance(info.value, ImportError)
    message = str(info.value)
    assert "resemblyzer" in message and 'pip install "rvc-peft[quality]"' in message and "--no-deps" in message
    with pytest.raises(QualityMetricsUnavailable, match="speechmos"):
        dnsmos(audio, 16000)
    with pytest.raises(QualityMetricsUnavailable):
        evaluate((audio, 16000), (audio, 16000), quality=True)

    sf.write(tmp_path / "conv.wav", audio, 16000)
    sf.write(tmp_path / "src.wav", voiced_signal(180.0, 1.0, seed=2)[0], 16000)
    code = main(["eval", str(tmp_path / "conv.wav"), str(tmp_path / "src.wav"), "--reference", str(tmp_path),
                 "--json", str(tmp_path / "m.json")])
    assert code == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "rvc-peft eval: note:" in line]
    assert len(notes) == 1 and "rvc-peft[quality]" in notes[0] and "Traceback" not in err
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["mcd_db"] > 0 and not set(saved) & {"secs", "secs_source", "dnsmos_ovrl"}


def test_evaluate_reports_a_silent_conversion_instead_of_failing():
    source, _ = voiced_signal(150.0, 1.2, seed=3)
    result = evaluate((np.zeros_like(source), 16000), (source, 16000), quality=["secs"])
    assert result["secs_source"] is None and "silent" in result["quality_notes"][0]
    assert result["mcd_db"] > 0 and "dnsmos_ovrl" not in result
