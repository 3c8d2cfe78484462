"""Audio reading/writing: formats, channel mixing, bit depths, resampling, and clear errors naming the file."""

from __future__ import annotations

import os
import stat

import librosa
import numpy as np
import pytest
import soundfile as sf

from rvc_peft.features.audio import AudioReadError, load_audio, read_audio, resample, save_wav


def _tone(sr: int, seconds: float, hz: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_stereo_24bit_flac_is_averaged_to_mono(tmp_path):
    left, right = _tone(44100, 0.5, 220), _tone(44100, 0.5, 330, 0.25)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    audio, rate = read_audio(path)
    assert rate == 44100 and audio.dtype == np.float32 and audio.shape == left.shape
    np.testing.assert_allclose(audio, (left + right) / 2, atol=2.0 ** -22)  # 24-bit quantisation


@pytest.mark.parametrize("subtype, atol", [("PCM_U8", 2 / 255), ("PCM_16", 2.0 ** -14), ("PCM_32", 1e-7), ("FLOAT", 0)])
def test_wav_bit_depths(tmp_path, subtype, atol):
    ref = _tone(16000, 0.25)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, ref, 16000, subtype=subtype)
    audio, _ = read_audio(path)
    np.testing.assert_allclose(audio, ref, atol=atol + 1e-9)


def test_ogg_and_mp3(tmp_path):
    ref = _tone(22050, 1.0, 440)
    sf.write(tmp_path / "x.ogg", ref, 22050, format="OGG", subtype="VORBIS")
    audio, rate = read_audio(tmp_path / "x.ogg")
    assert rate == 22050 and abs(len(audio) - len(ref)) < 64
    assert np.corrcoef(audio[1000:20000], ref[1000:20000])[0, 1] > 0.99
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    sf.write(tmp_path / "x.mp3", ref, 22050, format="MP3")
    audio, rate = read_audio(tmp_path / "x.mp3")
    assert rate == 22050 and audio.ndim == 1 and np.abs(audio).max() > 0.3


def test_load_audio_resamples_with_soxr_hq(tmp_path):
    ref = _tone(8000, 0.5, 300)
    sf.write(tmp_path / "call.wav", ref, 8000, subtype="FLOAT")
    out = load_audio(tmp_path / "call.wav", 40000)
    expected = librosa.resample(ref, orig_sr=8000, target_sr=40000, res_type="soxr_hq")
    assert out.dtype == np.float32 and len(out) == 20000
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert resample(ref, 8000, 8000) is not None and len(resample(ref, 8000, 8000)) == len(ref)


@pytest.mark.parametrize("kind, message", [
    ("nan", "NaN or infinite"), ("empty", "no audio samples"), ("text", "not a recognised audio file"),
    ("missing", "file not found"),
])
def test_bad_files_raise_clear_errors(tmp_path, kind, message):
    path = tmp_path / {"text": "notes.txt"}.get(kind, f"{kind}.wav")
    if kind == "nan":
        data = _tone(16000, 0.1)
        data[100] = np.nan
        sf.write(path, data, 16000, subtype="FLOAT")
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "text":
        path.write_text("not audio")
    with pytest.raises(AudioReadError, match=message) as info:
        read_audio(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_undecodable_audio_without_ffmpeg_says_so(tmp_path, monkeypatch):
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A garbage")
    monkeypatch.setattr("rvc_peft.features.audio.shutil.which", lambda name: None)
    with pytest.raises(AudioReadError, match="no ffmpeg executable") as info:
        read_audio(path)
    assert "song.m4a" in str(info.value)


def test_ffmpeg_fallback_decodes_through_a_float_wav(tmp_path, monkeypatch):
    # A stand-in `ffmpeg` that "decodes" by copying a prepared stereo WAV to its last argument; the fallback must
    # then mix and resample exactly like the soundfile path.
    decoded = tmp_path / "decoded.wav"
    stereo = np.stack([_tone(16000, 0.2), _tone(16000, 0.2, 500)], axis=1)
    sf.write(decoded, stereo, 16000, subtype="FLOAT")
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\ncp "{decoded}" "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"not decodable by libsndfile")
    audio, rate = read_audio(path)
    assert rate == 16000
    np.testing.assert_allclose(audio, stereo.mean(axis=1), atol=1e-7)


def test_save_wav_is_atomic_float32(tmp_path):
    path = tmp_path / "out.wav"
    audio = np.random.default_rng(0).uniform(-1.5, 1.5, 1000).astype(np.float32)  # float WAV keeps > 1.0
    save_wav(path, audio, 40000)
    back, rate = sf.read(path, dtype="float32")
    assert rate == 40000 and sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(back, audio)
    with pytest.raises(ValueError, match="Invalid shape"):
        save_wav(path, np.zeros((2, 3, 4), np.float32), 40000)  # invalid shape: the old file must survive
    np.testing.assert_array_equal(sf.read(path, dtype="float32")[0], audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
