"""Awkward input gets a correct result or a clear error naming it, never a crash from deep inside a library."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rvc_peft.features.audio import AudioReadError
from rvc_peft.inference import AudioTooShortError, ConversionError, prepare_audio

from .conftest import speech_like


def test_silence_converts_to_silence(converter):
    silent = np.zeros(16000 * 2, dtype=np.float32)
    out, rate = converter.convert(silent)
    assert rate == 40000 and len(out) > 0
    assert np.abs(out).max() == 0.0  # the RMS mix takes the input's (zero) loudness
    raw, _ = converter.convert(silent, rms_mix_rate=1.0)  # the synthesizer's own output: finite, not NaN
    assert np.isfinite(raw).all()


def test_a_tenth_of_a_second_converts(converter):
    out, _ = converter.convert(speech_like(0.1))
    # spec §4.5: 1600 samples + 2·4800 padding = 11200 -> min(11200 // 160, 2·((11200 - 400) // 320 + 1))
    # = min(70, 68) frames, less 2·30 trimmed = 8 frames (RVC loses the last 20 ms of so short a clip)
    assert len(out) == 8 * 400 and np.isfinite(out).all()


def test_too_short_is_a_clear_error(converter):
    with pytest.raises(AudioTooShortError, match=r"<array>: audio is 0\.0200 s long; at least 0\.025 s"):
        converter.convert(np.ones(320, dtype=np.float32))
    with pytest.raises(ConversionError, match="contains no audio samples"):
        converter.convert(np.zeros(0, dtype=np.float32))


def test_stereo_file_and_arrays_are_averaged(converter, tmp_path):
    mono = speech_like(0.8)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    expected, _ = converter.convert(0.75 * mono)
    np.testing.assert_array_equal(converter.convert(tmp_path / "stereo.wav")[0], expected)
    np.testing.assert_array_equal(converter.convert(stereo)[0], expected)
    np.testing.assert_array_equal(converter.convert(stereo.T.copy())[0], expected)  # [channels, samples]
    with pytest.raises(ConversionError, match=r"expected mono \[samples\]"):
        converter.convert(np.zeros((2, 2, 800), dtype=np.float32))


def test_8_bit_and_16_bit_pcm(converter, tmp_path):
    pcm8 = np.clip(np.round(speech_like(0.8) * 127 + 128), 0, 255).astype(np.uint8)
    sf.write(tmp_path / "u8.wav", (pcm8.astype(np.float32) - 128) / 128, 16000, subtype="PCM_U8")
    assert sf.info(tmp_path / "u8.wav").subtype == "PCM_U8"
    from_file, _ = converter.convert(tmp_path / "u8.wav")
    from_array, _ = converter.convert(pcm8)  # uint8 samples: zero at 128
    np.testing.assert_allclose(from_file, from_array, atol=1e-6)
    pcm16 = (speech_like(0.8) * 20000).astype(np.int16)
    np.testing.assert_allclose(converter.convert(pcm16)[0], converter.convert(pcm16 / 32768.0)[0], atol=1e-6)
    assert np.allclose(prepare_audio(pcm8)[0], (pcm8 - 128.0) / 128.0, atol=1e-7)


def test_loud_float_file_is_peak_limited_like_rvc(converter, tmp_path):
    loud = 3.0 * speech_like(0.8)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    audio, _ = prepare_audio(tmp_path / "loud.wav")
    assert np.isclose(np.abs(audio).max(), 0.95, atol=1e-6)  # spec §4.1: x / (max|x| / 0.95)
    out, _ = converter.convert(tmp_path / "loud.wav")
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6


def test_8_khz_input_is_resampled(converter, tmp_path):
    import librosa

    audio8k = speech_like(1.0, sr=8000)
    sf.write(tmp_path / "phone.wav", audio8k, 8000, subtype="FLOAT")
    out, rate = converter.convert(tmp_path / "phone.wav")
    expected, _ = converter.convert((audio8k, 8000))
    np.testing.assert_array_equal(out, expected)
    resampled = librosa.resample(audio8k, orig_sr=8000, target_sr=16000, res_type="soxr_hq")
    np.testing.assert_allclose(prepare_audio((audio8k, 8000))[0], resampled, atol=1e-6)
    assert abs(len(out) / rate - 1.0) < 0.03


def test_nan_samples_are_refused_with_the_name(converter, tmp_path):
    audio = speech_like(0.8)
    audio[100:103] = np.nan
    with pytest.raises(ConversionError, match="<array>: contains 3 NaN or infinite samples"):
        converter.convert(audio)
    sf.write(tmp_path / "nan.wav", audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match=r"nan\.wav: contains 3 NaN or infinite samples"):
        converter.convert(tmp_path / "nan.wav")


def test_non_audio_file_is_refused_with_the_name(converter, tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioReadError, match=r"notes\.wav: "):
        converter.convert(fake)
    with pytest.raises(AudioReadError, match=r"missing\.wav: file not found"):
        converter.convert(tmp_path / "missing.wav")


def test_bad_settings_are_clear_errors(converter):
    audio = speech_like(0.5)
    for kwargs, message in [
        ({"index_rate": 1.5}, "index_rate must be in"),
        ({"protect": 0.7}, "protect must be in"),
        ({"rms_mix_rate": -0.1}, "rms_mix_rate must be in"),
        ({"f0_up_key": float("nan")}, "f0_up_key must be a finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            converter.convert(audio, **kwargs)
    with pytest.raises(ConversionError, match="speaker id 7 is out of range; this model has 4 speaker rows"):
        converter.convert(audio, speaker_id=7)
    with pytest.raises(ConversionError, match="pitch extraction failed: unknown f0 method 'yin'"):
        converter.convert(audio, f0_method="yin")


def test_broken_model_files_are_refused_before_converting(tmp_path, adapters, encoder):
    """A NaN base or adapter would convert to silence (or noise) with exit 0; each is an error naming the file."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from rvc_peft.checkpoints import CheckpointError, export_rvc
    from rvc_peft.inference import VoiceConverter
    from rvc_peft.inference.voices import VoiceError

    from .conftest import tiny_synthesizer

    voice = export_rvc(tiny_synthesizer(), tmp_path / "voice.pth")
    obj = torch.load(voice, weights_only=True)
    obj["weight"]["dec.conv_post.weight"][0, 0, 0] = float("nan")
    torch.save(obj, tmp_path / "nan_voice.pth")
    with pytest.raises(CheckpointError, match=r"nan_voice\.pth: tensor 'dec\.conv_post\.weight' contains NaN"):
        VoiceConverter.from_pretrained(tmp_path / "nan_voice.pth", content_encoder=encoder, f0_method=lambda a, n: a)

    folder = tmp_path / "alice_inf"
    shutil.copytree(adapters["alice"], folder)
    tensors = load_file(folder / "adapter_model.safetensors")
    key = min(k for k in tensors if "lora_B" in k)
    tensors[key] = tensors[key] * float("inf")
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(VoiceError, match=rf"alice_inf/adapter_model\.safetensors: tensor '{key}' contains (inf|NaN)"):
        VoiceConverter.from_pretrained(voice, folder, content_encoder=encoder, f0_method=lambda a, n: a)
