"""The lab's offline multi-speaker corpus: registry, audio format, manifest, reuse, helpers and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.cli import main
from rvc_peft.data.preprocess import speaker_for
from rvc_peft.lab import corpus
from rvc_peft.lab.corpus import (
    CORPUS_VERSION,
    SAMPLE_RATE,
    SENTENCE_IDS,
    SENTENCES,
    TARGET_SPEAKERS,
    VOICES,
    CorpusError,
    base_speakers,
    build_corpus,
    load_manifest,
    sentence_split,
    speaker_files,
    target_speakers,
    write_speaker_folders,
)

# two espeak-ng variants far apart in pitch (male ~95 Hz, female ~190 Hz) and, when flite is there, a target voice
SMALL_VOICES = ("espeak-en-us-m1", "espeak-en-us-f2", "flite-awb")
SMALL_SENTENCES = ("s000", "s001", "s032")


def _require(*names: str) -> None:
    for name in names:
        reason = VOICES[name].unavailable_reason()
        if reason is not None:
            pytest.skip(f"{name}: {reason}")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    _require("espeak-en-us-m1", "espeak-en-us-f2")
    out = tmp_path_factory.mktemp("corpus")
    return build_corpus(out, voices=SMALL_VOICES, sentences=SMALL_SENTENCES, progress=False)


def _median_f0(audio: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch (60-400 Hz) of the loud 40 ms frames."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    energy = np.sqrt(np.mean(frames**2, axis=1))
    estimates = []
    for chunk in frames[energy > 0.3 * energy.max()]:
        chunk = chunk - chunk.mean()
        ac = np.correlate(chunk, chunk, mode="full")[frame - 1:]
        low, high = rate // 400, rate // 60
        lag = low + int(np.argmax(ac[low:high]))
        if ac[lag] > 0.3 * ac[0]:
            estimates.append(rate / lag)
    return float(np.median(estimates))


def test_sentences_are_fixed_and_split():
    assert CORPUS_VERSION == "1"
    assert len(SENTENCES) == 40 and len(set(SENTENCES)) == 40
    assert SENTENCE_IDS[0] == "s000" and SENTENCE_IDS[-1] == "s039"
    assert [sentence_split(sid) for sid in SENTENCE_IDS].count("train") == 32
    assert sentence_split("s031") == "train" and sentence_split("s032") == "heldout"
    assert all(4 <= len(text.split()) <= 12 and not any(ch.isdigit() for ch in text) for text in SENTENCES)
    with pytest.raises(CorpusError, match="s040"):
        sentence_split("s040")


def test_registry_and_targets():
    assert len(TARGET_SPEAKERS) == 4 and set(TARGET_SPEAKERS) <= set(VOICES)
    assert len([v for v in VOICES.values() if v.engine == "espeak-ng"]) >= 6
    assert {v.engine for v in VOICES.values()} == {"espeak-ng", "flite", "festival", "piper", "kokoro"}
    for voice in VOICES.values():
        reason = voice.unavailable_reason()
        assert voice.available() == (reason is None)
        assert reason is None or isinstance(reason, str)


def test_postprocess_resamples_trims_and_normalises():
    rate = 22050
    t = np.arange(int(1.0 * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 150 * t)
    audio = np.concatenate([np.zeros(rate), tone, np.zeros(2 * rate)]).astype(np.float32)
    out = corpus._postprocess(audio, rate)
    assert out.dtype == np.float32
    assert np.isclose(np.abs(out).max(), 0.9, atol=1e-4)
    assert 1.0 <= len(out) / SAMPLE_RATE <= 1.0 + 2 * 0.15 + 0.02  # the tone plus at most 0.15 s each side


def test_small_corpus_files(small_corpus):
    root = Path(small_corpus["corpus_dir"])
    speakers = [v["name"] for v in small_corpus["voices"]]
    assert speakers[:2] == ["espeak-en-us-m1", "espeak-en-us-f2"]
    assert len(small_corpus["files"]) == len(speakers) * len(SMALL_SENTENCES)
    for entry in small_corpus["files"]:
        path = root / entry["path"]
        assert path == root / "wavs" / entry["speaker"] / f"{entry['sentence_id']}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert 0.5 <= info.duration <= 10.0
        assert abs(info.duration - entry["duration_s"]) < 1e-3
        audio, _ = sf.read(str(path))
        assert 0.85 <= np.abs(audio).max() <= 0.91
        assert entry["split"] == sentence_split(entry["sentence_id"])
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"


def test_manifest_round_trip_and_roles(small_corpus):
    root = Path(small_corpus["corpus_dir"])
    loaded = load_manifest(root)
    assert loaded == small_corpus
    on_disk = json.loads((root / "manifest.json").read_text())
    assert "corpus_dir" not in on_disk and on_disk["complete"] is True
    assert on_disk["corpus_version"] == CORPUS_VERSION and on_disk["sample_rate"] == 16000
    assert on_disk["sentences"]["s032"] == {"text": SENTENCES[32], "split": "heldout"}
    assert on_disk["sentences"]["s000"]["split"] == "train"
    assert on_disk["sentence_split"] == {"train": ["s000", "s001"], "heldout": ["s032"]}
    roles = {v["name"]: v["role"] for v in on_disk["voices"]}
    assert roles["espeak-en-us-m1"] == roles["espeak-en-us-f2"] == "base"
    if "flite-awb" in roles:
        assert roles["flite-awb"] == "target"
        assert target_speakers(loaded) == ["flite-awb"]
    assert base_speakers(loaded) == ["espeak-en-us-m1", "espeak-en-us-f2"]
    assert on_disk["speaker_split"]["base"] == base_speakers(loaded)
    for voice in on_disk["voices"]:
        assert voice["engine_version"] and voice["arguments"] and voice["sentences"] == list(SMALL_SENTENCES)


def test_speaker_files(small_corpus):
    root = Path(small_corpus["corpus_dir"])
    train = speaker_files(small_corpus, "espeak-en-us-m1")
    assert [p.name for p in train] == ["s000.wav", "s001.wav"] and all(p.is_absolute() and p.is_file() for p in train)
    assert [p.name for p in speaker_files(root, "espeak-en-us-m1", "heldout")] == ["s032.wav"]
    assert len(speaker_files(root, "espeak-en-us-f2", "all")) == 3
    with pytest.raises(CorpusError, match="not in the corpus"):
        speaker_files(small_corpus, "piper-nobody")
    with pytest.raises(CorpusError, match="split"):
        speaker_files(small_corpus, "espeak-en-us-m1", "test")


def test_second_build_reuses_files(small_corpus):
    root = Path(small_corpus["corpus_dir"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")}
    again = build_corpus(root, voices=SMALL_VOICES, sentences=SMALL_SENTENCES, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")} == before
    assert again["files"] == small_corpus["files"]


def _age(path: Path) -> int:
    """Set the file's mtime one second back; returns it (a rewrite of the file changes it)."""
    old = path.stat().st_mtime_ns - 10**9
    os.utime(path, ns=(old, old))
    return old


def test_overwrite_changed_voice_and_version_check(tmp_path):
    _require("espeak-en-us-m1", "espeak-en-us-f2")
    build_corpus(tmp_path, voices=["espeak-en-us-m1", "espeak-en-us-f2"], sentences=[0], progress=False)
    clip = tmp_path / "wavs" / "espeak-en-us-m1" / "s000.wav"
    other = tmp_path / "wavs" / "espeak-en-us-f2" / "s000.wav"
    # a subset build describes only its voice, and the full build afterwards still reuses the other one's clips
    old_other = _age(other)
    assert [v["name"] for v in build_corpus(tmp_path, voices=["espeak-en-us-m1"], sentences=[0],
                                            progress=False)["voices"]] == ["espeak-en-us-m1"]
    build_corpus(tmp_path, voices=["espeak-en-us-m1", "espeak-en-us-f2"], sentences=[0], progress=False)
    assert other.stat().st_mtime_ns == old_other

    old = _age(clip)
    build_corpus(tmp_path, voices=["espeak-en-us-m1"], sentences=[0], overwrite=True, progress=False)
    assert clip.stat().st_mtime_ns != old

    # a speaker folder made with other engine settings (here: another engine version) is redone
    stamp_file = clip.parent / ".voice.json"
    stamp = json.loads(stamp_file.read_text())
    stamp_file.write_text(json.dumps({**stamp, "engine_version": "espeak-ng 0.1"}))
    old = _age(clip)
    build_corpus(tmp_path, voices=["espeak-en-us-m1"], sentences=[0], progress=False)
    assert clip.stat().st_mtime_ns != old and json.loads(stamp_file.read_text()) == stamp

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["corpus_version"] = "0"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorpusError, match="overwrite"):
        build_corpus(tmp_path, voices=["espeak-en-us-m1"], sentences=[0], progress=False)
    with pytest.raises(CorpusError, match="version"):
        load_manifest(tmp_path)


def test_two_voices_really_differ(small_corpus):
    male, _ = sf.read(str(speaker_files(small_corpus, "espeak-en-us-m1", "all")[0]))
    female, _ = sf.read(str(speaker_files(small_corpus, "espeak-en-us-f2", "all")[0]))
    f0_male, f0_female = _median_f0(male, SAMPLE_RATE), _median_f0(female, SAMPLE_RATE)
    assert 60 < f0_male < 150 and f0_female > 1.5 * f0_male, (f0_male, f0_female)


def test_write_speaker_folders(small_corpus, tmp_path):
    root = Path(small_corpus["corpus_dir"])
    out = write_speaker_folders(root, tmp_path / "audio", ["espeak-en-us-f2", "espeak-en-us-m1"])
    assert out == tmp_path / "audio"
    assert json.loads((out / "speakers.json").read_text()) == {"0": "espeak-en-us-f2", "1": "espeak-en-us-m1"}
    assert sorted(p.name for p in (out / "0").iterdir()) == ["s000.wav", "s001.wav"]
    for speaker_id, speaker in ((0, "espeak-en-us-f2"), (1, "espeak-en-us-m1")):
        for path in (out / str(speaker_id)).iterdir():
            assert path.resolve() == (root / "wavs" / speaker / path.name).resolve()
            assert speaker_for(path.relative_to(out).as_posix()) == speaker_id  # the id preprocess will give it
    # a second layout into the same folder replaces the first
    write_speaker_folders(root, out, ["espeak-en-us-m1"], split="heldout")
    assert sorted(p.name for p in out.iterdir()) == ["0", "speakers.json"]
    assert [p.name for p in (out / "0").iterdir()] == ["s032.wav"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        write_speaker_folders(root, tmp_path / "other", ["espeak-en-us-m1"])


def test_no_voice_available(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.Voice, "unavailable_reason", lambda self: "not installed (test)")
    with pytest.raises(CorpusError, match="no voice is available") as error:
        build_corpus(tmp_path, progress=False)
    assert "apt-get install espeak-ng" in str(error.value) and "pip install piper-tts" in str(error.value)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(CorpusError, match="unknown voice"):
        build_corpus(tmp_path, voices=["espeak-nobody"], progress=False)


def test_engine_failures_name_the_voice(tmp_path, monkeypatch):
    _require("espeak-en-us-m1")

    def engine_with(synthesize):
        espeak = corpus._ENGINES["espeak-ng"]
        return type(espeak)(espeak.unavailable_reason, espeak.version, synthesize, espeak.install)

    def crash(voice, text, timeout):
        raise RuntimeError("exited with 1")

    def hang(voice, text, timeout):
        raise subprocess.TimeoutExpired("espeak-ng", timeout)

    monkeypatch.setitem(corpus._ENGINES, "espeak-ng", engine_with(crash))
    with pytest.raises(CorpusError, match=r"espeak-en-us-m1 \(espeak-ng\) failed: RuntimeError: exited with 1"):
        build_corpus(tmp_path, voices=["espeak-en-us-m1"], sentences=[0], progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["complete"] is False
    with pytest.raises(CorpusError, match="did not finish"):
        load_manifest(tmp_path)

    monkeypatch.setitem(corpus._ENGINES, "espeak-ng", engine_with(hang))
    with pytest.raises(CorpusError, match="espeak-en-us-m1 .*no result within 5 s"):
        VOICES["espeak-en-us-m1"].synthesize("Hello.", timeout=5)
    with pytest.raises(subprocess.TimeoutExpired):
        corpus._call_with_timeout(lambda: time.sleep(2), 0.05)


@pytest.mark.parametrize("engine", ["espeak-ng", "flite", "festival", "piper"])
def test_each_engine_speaks(engine):
    voice = next(v for v in VOICES.values() if v.engine == engine)
    reason = voice.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{voice.name}: {reason}")
    assert voice.engine_version()
    raw, rate = voice.synthesize(SENTENCES[5])
    audio = corpus._postprocess(raw, rate)
    assert rate in (16000, 22050, 24000, 32000) and 1.0 < len(audio) / SAMPLE_RATE < 6.0


def test_kokoro_phoneme_mapping():
    vocab = {symbol: index for index, symbol in enumerate(" .?ʤæktwɪliAIOWɹəðɚs")}
    assert corpus._kokoro_phonemes("d\u200dʒˈæk  tʃ", vocab, "?") == "ʤæk ?"
    assert corpus._kokoro_phonemes("ðɐ wˈeɪ", vocab) == "ðə wA."


def test_cli_list_voices(capsys):
    assert main(["lab-corpus", "--list-voices"]) == 0
    out = capsys.readouterr().out
    for name in ("espeak-en-us-m1", "flite-awb", "festival-ked", "piper-joe", "kokoro-jf-alpha"):
        assert name in out


def test_cli_builds_and_summarises(tmp_path, capsys):
    _require("espeak-en-us-m1")
    assert main(["lab-corpus", str(tmp_path), "--voices", "espeak-en-us-m1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 speakers (1 base, 0 target), 40 clips" in out and "espeak-en-us-m1" in out
    assert len(speaker_files(tmp_path, "espeak-en-us-m1", "heldout")) == 8
    assert main(["lab-corpus", str(tmp_path), "--voices", "nobody"]) == 1


def test_import_is_lazy():
    code = "import sys, rvc_peft.lab as lab; assert 'rvc_peft.lab.corpus' not in sys.modules; lab.build_corpus"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
