"""The conversion pipeline against independent computations of RVC's steps (spec §4.3-§4.7)."""

from __future__ import annotations

import dataclasses
import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_peft.inference import (
    ConversionError,
    ConversionSettings,
    VoiceBank,
    VoiceConverter,
    WindowConfig,
    rms_mix,
    write_audio,
)
from rvc_peft.inference.segmentation import find_split_points, highpass
from rvc_peft.testing import small_config

from .conftest import SMALL_WINDOW, speech_like, steady_pitch, tiny_config, tiny_encoder, tiny_synthesizer

F0_MEL_MIN = 1127 * np.log(1 + 50 / 700)
F0_MEL_MAX = 1127 * np.log(1 + 1100 / 700)


def rvc_coarse(f0: np.ndarray) -> np.ndarray:
    """Spec §4.4 step 5, written out."""
    mel = 1127 * np.log(1 + f0 / 700)
    mel[mel > 0] = (mel[mel > 0] - F0_MEL_MIN) * 254 / (F0_MEL_MAX - F0_MEL_MIN) + 1
    mel[mel <= 1] = 1
    mel[mel > 255] = 255
    return np.rint(mel).astype(np.int64)


def expected_frames(num_samples_16k: int, window: WindowConfig) -> int:
    """Output frames of a file converted in one segment: min(n, 2F) - 2·pad (spec §4.5 step 5)."""
    padded = num_samples_16k + 2 * window.t_pad
    content_frames = (padded - 400) // 320 + 1
    return min(padded // 160, 2 * content_frames) - 2 * window.pad_frames()


class SpyIndex:
    """A retrieval index stand-in: blends towards a constant vector and records what it was asked."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.target = np.linspace(-1, 1, dim, dtype=np.float32)
        self.calls: list[tuple[np.ndarray, float]] = []

    def blend(self, feats: np.ndarray, index_rate: float) -> np.ndarray:
        self.calls.append((feats.copy(), index_rate))
        return index_rate * self.target[None, :] + (1 - index_rate) * feats


def capture_infer(converter: VoiceConverter) -> list[dict]:
    calls: list[dict] = []
    original = converter.voices.infer

    def spy(phone, **kwargs):
        calls.append({"phone": phone.clone(), **{k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}})
        return original(phone, **kwargs)

    converter.voices.infer = spy
    return calls


def test_output_length_rate_and_peak_follow_rvc(base, encoder):
    converter = VoiceConverter(base, encoder, f0_method=steady_pitch, seed=0)  # fp32 constants: 1/6/38/41 s
    audio = speech_like(1.3)
    out, rate = converter.convert(audio)
    assert rate == 40000 and out.dtype == np.float32
    assert len(out) == expected_frames(len(audio), WindowConfig.fp32()) * 400 == 51200
    assert np.abs(out).max() <= 0.99 + 1e-6
    resampled, rate = converter.convert(audio, resample_sr=48000)
    assert rate == 48000 and len(resampled) == 61440
    with pytest.raises(ValueError, match="resample_sr must be 0"):
        converter.convert(audio, resample_sr=8000)


def test_determinism_with_a_fixed_seed(base, encoder):
    audio = speech_like(1.0)
    seeded = VoiceConverter(base, encoder, f0_method=steady_pitch, seed=123, window=SMALL_WINDOW)
    state = torch.random.get_rng_state()
    first, _ = seeded.convert(audio)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    second, _ = seeded.convert(audio)
    np.testing.assert_array_equal(first, second)
    seeded.seed = 124
    third, _ = seeded.convert(audio)
    assert np.abs(third - first).max() > 1e-4  # the noise is real, and it is the seed that fixes it


def test_segment_inputs_are_rvc_features_retrieval_protect_and_pitch(base, encoder):
    """What reaches `infer` equals spec §4.5 computed independently from the encoder output."""
    converter = VoiceConverter(base, encoder, f0_method=steady_pitch, seed=0, window=SMALL_WINDOW)
    calls = capture_infer(converter)
    index = SpyIndex(256)
    audio = speech_like(1.2)
    index_rate, protect, key = 0.6, 0.25, 5
    converter.convert(audio, f0_up_key=key, index=index, index_rate=index_rate, protect=protect)
    assert len(calls) == 1 and len(index.calls) == 1 and index.calls[0][1] == index_rate

    padded = np.pad(highpass(audio / max(1.0, np.abs(audio).max() / 0.95)), (4800, 4800), mode="reflect")
    with torch.no_grad():
        feats = encoder(torch.from_numpy(padded).float()[None])[0].numpy()  # [F, 256] at 50 fps
    np.testing.assert_allclose(index.calls[0][0], feats, atol=1e-5)
    p_len = min(len(padded) // 160, 2 * len(feats))
    f0 = steady_pitch(padded, len(padded) // 160)[:p_len].astype(np.float64) * 2 ** (key / 12)
    blended = np.repeat(index_rate * index.target[None] + (1 - index_rate) * feats, 2, axis=0)[:p_len]
    original = np.repeat(feats, 2, axis=0)[:p_len]
    weight = np.where(f0 > 0, 1.0, protect)[:, None]
    expected_phone = blended * weight + original * (1 - weight)

    call = calls[0]
    np.testing.assert_allclose(call["phone"][0].numpy(), expected_phone, atol=1e-5)
    np.testing.assert_allclose(call["nsff0"][0].numpy(), f0, rtol=1e-6)
    np.testing.assert_array_equal(call["pitch"][0].numpy(), rvc_coarse(f0))
    assert call["phone_lengths"].tolist() == [p_len] and call["sid"].tolist() == [0]


def test_index_rate_zero_and_protect_half_switch_steps_off(base, encoder):
    converter = VoiceConverter(base, encoder, f0_method=steady_pitch, seed=0, window=SMALL_WINDOW)
    calls = capture_infer(converter)
    index = SpyIndex(256)
    audio = speech_like(0.8)
    converter.convert(audio, index=index, index_rate=0.0, protect=0.5)
    assert index.calls == []
    padded = np.pad(highpass(audio / max(1.0, np.abs(audio).max() / 0.95)), (4800, 4800), mode="reflect")
    with torch.no_grad():
        feats = encoder(torch.from_numpy(padded).float()[None])[0].numpy()
    np.testing.assert_allclose(calls[0]["phone"][0].numpy(), np.repeat(feats, 2, axis=0)[: calls[0]["phone"].shape[1]],
                               atol=1e-5)


def test_rms_mix_equals_independent_formula():
    rng = np.random.default_rng(0)
    source = (rng.standard_normal(16000 * 3) * np.linspace(0.01, 1, 16000 * 3)).astype(np.float64)
    output = (rng.standard_normal(40000 * 3) * 0.3).astype(np.float32)

    def rms_frames(x, frame, hop):  # librosa.feature.rms with centre padding by zeros, written out
        padded = np.pad(x.astype(np.float64), frame // 2)
        count = 1 + len(x) // hop
        return np.array([np.sqrt(np.mean(padded[k * hop : k * hop + frame] ** 2)) for k in range(count)])

    def stretch(values, n):  # torch linear interpolation with align_corners=False
        positions = np.clip((np.arange(n) + 0.5) * len(values) / n - 0.5, 0, len(values) - 1)
        return np.interp(positions, np.arange(len(values)), values)

    for rate in (0.0, 0.25, 1.0):
        rms_in = stretch(rms_frames(source, 16000, 8000), len(output))
        rms_out = np.maximum(stretch(rms_frames(output, 40000, 20000), len(output)), 1e-6)
        expected = output * rms_in ** (1 - rate) * rms_out ** (rate - 1)
        np.testing.assert_allclose(rms_mix(source, output.copy(), 40000, rate), expected, rtol=2e-4, atol=1e-6)


def test_write_audio_int16_like_webui_and_float_like_applio(tmp_path):
    audio = np.array([0.0, 0.5, -0.99, 0.99, 0.123456], dtype=np.float32)
    pcm = write_audio(tmp_path / "a.wav", audio, 40000)
    data, rate = sf.read(pcm, dtype="int16")
    assert rate == 40000 and sf.info(pcm).subtype == "PCM_16"
    np.testing.assert_array_equal(data, (audio * 32768).astype(np.int16))
    flt = write_audio(tmp_path / "b.wav", audio, 40000, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(flt, dtype="float32")[0], audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(pcm).st_mode) == 0o666 & ~umask  # readable by others like any new file, not 0600


def test_long_audio_is_continuous_at_segment_boundaries(base, encoder, no_noise):
    """7 s split into 4 segments vs the same audio in one piece: same length, same shape, no clicks."""
    audio = speech_like(7.0)
    segmented = VoiceConverter(base, encoder, f0_method=steady_pitch, window=SMALL_WINDOW)
    whole = VoiceConverter(base, encoder, f0_method=steady_pitch, window=WindowConfig(0.3, 0.5, 100, 100))
    a, _ = segmented.convert(audio, rms_mix_rate=1.0)
    b, _ = whole.convert(audio, rms_mix_rate=1.0)
    assert segmented.last_timings.segments == 4 and whole.last_timings.segments == 1
    assert len(a) == len(b)
    assert np.corrcoef(a - a.mean(), b - b.mean())[0, 1] > 0.8
    largest_natural_step = np.abs(np.diff(b)).max()
    for point in find_split_points(highpass(audio), SMALL_WINDOW):
        boundary = point // 160 * 400  # first output sample of the next segment
        assert abs(a[boundary] - a[boundary - 1]) <= 1.5 * largest_natural_step
        around = slice(boundary - 2000, boundary + 2000)
        assert abs(a[around].std() - b[around].std()) <= 0.5 * b[around].std() + 1e-4  # no level jump


class ProbeEncoder(torch.nn.Module):
    """Stand-in content encoder with RVC's frame count, so 10 minutes run in seconds."""

    version, output_dim = "v1", 256

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        frames = (wav.shape[1] - 400) // 320 + 1
        return torch.zeros(wav.shape[0], frames, 256) * self.scale


class ProbeSynthesizer(torch.nn.Module):
    """Stand-in synthesizer that echoes each frame's F0 (÷1000) for hop samples: output position ↔ input frame."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.scale = torch.nn.Parameter(torch.ones(()))

    def infer(self, phone, phone_lengths, pitch=None, nsff0=None, sid=None):
        assert phone.shape[:2] == nsff0.shape == pitch.shape
        return (nsff0 / 1000 * self.scale).repeat_interleave(self.config.hop_length, dim=1)[:, None], None, None


def position_pitch(audio16k: np.ndarray, p_len: int) -> np.ndarray:
    return 100.0 + 0.5 * (np.arange(p_len) % 1000)  # encodes the frame number (mod 10 s) in the F0


@pytest.mark.parametrize(("seconds", "window", "rvc_trim"), [
    (600, WindowConfig.fp32(), False),  # 10 minutes with RVC's fp32 constants: 16 segments
    (20, SMALL_WINDOW, False),
    (20, SMALL_WINDOW, True),
])
def test_long_audio_converts_frame_by_frame_in_order(seconds, window, rvc_trim):
    """Each output frame comes from the input frame at its time, across every segment boundary.

    RVC's own trimming (`rvc_trim=True`) instead drops one 10 ms frame at every boundary whose segment has an odd
    number of frames (the content encoder then yields one frame less than the pitch track), shifting all that
    follows; ours keeps every frame.
    """
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(16000 * seconds)).astype(np.float32)
    converter = VoiceConverter(VoiceBank(ProbeSynthesizer(small_config("v1", True, 40000)), fold=False),
                               ProbeEncoder(), f0_method=position_pitch, window=window, rvc_trim=rvc_trim)
    out, _ = converter.convert(audio, rms_mix_rate=1.0)
    splits = [p // 160 * 160 for p in find_split_points(highpass(audio), window)]
    assert converter.last_timings.segments == len(splits) + 1 >= 3
    frames = out[::400]
    pad = window.pad_frames()
    expected = position_pitch(None, 100 * seconds + 2 * pad + 1)[pad:] / 1000  # padded frame k + pad ↔ output k
    lengths = np.diff([0, *splits]) // 160
    dropped = int((lengths % 2 == 1).sum()) if rvc_trim else 0
    last = 16000 * seconds + 2 * window.t_pad - splits[-1]  # the last segment runs to the end of the padded audio
    last_frames = min(last // 160, 2 * ((last - 400) // 320 + 1)) - 2 * pad  # spec §4.5 step 5, then the trim
    assert len(frames) == lengths.sum() + last_frames - dropped
    if not rvc_trim:
        np.testing.assert_allclose(frames, expected[: len(frames)], rtol=1e-6)
    else:
        assert dropped > 0
        first_drop = splits[int(np.argmax(lengths % 2 == 1))] // 160  # the boundary after the first odd segment
        np.testing.assert_allclose(frames[: first_drop - 1], expected[: first_drop - 1], rtol=1e-6)
        np.testing.assert_allclose(frames[first_drop - 1 : first_drop + 50], expected[first_drop : first_drop + 51],
                                   rtol=1e-6)  # everything after it comes 10 ms early


def test_no_pitch_model_never_asks_for_pitch(encoder):
    def forbidden(audio, p_len):
        raise AssertionError("a no-pitch model must not extract F0")

    synth = tiny_synthesizer(tiny_config(use_f0=False))
    converter = VoiceConverter(synth, encoder, f0_method=forbidden, seed=0, window=SMALL_WINDOW)
    out, rate = converter.convert(speech_like(0.6))
    assert rate == 40000 and len(out) > 0 and np.isfinite(out).all()


def test_content_encoder_must_fit_the_model(base):
    wrong = tiny_encoder(version="v2")  # 32-d v2 features; the model is v1 (256-d)
    with pytest.raises(ConversionError, match="the synthesizer is an RVC v1 model that reads 256-d features"):
        VoiceConverter(base, wrong)


def test_real_faiss_index_file_is_used(base, encoder, tmp_path):
    from rvc_peft.data.index import build_index, save_index

    features = np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32)
    path = save_index(build_index(features, show_progress=False), tmp_path / "voice.index")
    converter = VoiceConverter(base, encoder, f0_method=steady_pitch, seed=0, window=SMALL_WINDOW)
    audio = speech_like(0.8)
    plain, _ = converter.convert(audio, index=path, index_rate=0.0)
    retrieved, _ = converter.convert(audio, index=str(path), index_rate=1.0)
    assert converter.last_timings.retrieval > 0
    assert np.abs(plain - retrieved).max() > 1e-3
    bad = save_index(build_index(features[:, :64], show_progress=False), tmp_path / "v0.index")
    with pytest.raises(ConversionError, match=r"v0\.index: holds 64-d features, but this v1 model reads 256-d"):
        converter.convert(audio, index=bad)


# --- ConversionSettings -----------------------------------------------------------------------------------------

def test_settings_object_and_keyword_arguments_convert_alike(bank, encoder):
    """`settings=` and the same values as keywords give the same samples (seeded), in `convert` and in
    `convert_batch`; keywords given with `settings=` replace those fields."""
    converter = VoiceConverter(bank, encoder, f0_method=steady_pitch, seed=3, window=SMALL_WINDOW)
    audio = speech_like(1.2)
    index = SpyIndex(256)
    values = {"f0_up_key": 2.5, "index": index, "index_rate": 0.6, "protect": 0.2, "rms_mix_rate": 0.7,
              "speaker_id": 1, "filter_radius": 0}
    settings = ConversionSettings(**values)
    by_keywords, rate = converter.convert(audio, voice="alice", **values)
    by_settings, settings_rate = converter.convert(audio, voice="alice", settings=settings)
    assert rate == settings_rate == 40000
    np.testing.assert_array_equal(by_settings, by_keywords)
    default, _ = converter.convert(audio, voice="alice")
    assert np.abs(by_settings - default).max() > 1e-3  # the settings were used, not the defaults

    overridden, _ = converter.convert(audio, voice="alice", settings=settings, protect=0.5, f0_up_key=0)
    np.testing.assert_array_equal(overridden, converter.convert(audio, voice="alice", **{
        **values, "protect": 0.5, "f0_up_key": 0})[0])
    assert np.abs(overridden - by_settings).max() > 1e-3
    assert settings.protect == 0.2 and settings.f0_up_key == 2.5  # frozen: overrides never change the object

    clips, voices = [audio, speech_like(0.7, seed=4)], ["alice", "bob"]
    batch_settings = converter.convert_batch(clips, voices, settings=settings)
    batch_keywords = converter.convert_batch(clips, voices, **values)
    for (a, a_rate), (b, b_rate) in zip(batch_settings, batch_keywords):
        assert a_rate == b_rate == 40000
        np.testing.assert_array_equal(a, b)


def test_settings_are_checked_when_made():
    assert ConversionSettings() == ConversionSettings(f0_up_key=0, index=None, index_rate=0.75, protect=0.33,
                                                      rms_mix_rate=0.25, filter_radius=3, resample_sr=0)  # WebUI's
    for kwargs, message in [
        ({"index_rate": -0.1}, r"index_rate must be in \[0, 1\], got -0.1"),
        ({"protect": 0.51}, r"protect must be in \[0, 0.5\] \(0.5 disables it\), got 0.51"),
        ({"rms_mix_rate": 1.5}, r"rms_mix_rate must be in \[0, 1\], got 1.5"),
        ({"filter_radius": -1}, "filter_radius must be >= 0, got -1"),
        ({"resample_sr": 8000}, r"resample_sr must be 0 \(keep the model's rate\) or at least 16000, got 8000"),
        ({"f0_up_key": float("inf")}, "f0_up_key must be a finite number of semitones, got inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            ConversionSettings(**kwargs)
    settings = ConversionSettings(protect=0.5, resample_sr=16000, index_rate=1.0)  # the bounds themselves are fine
    with pytest.raises(ValueError, match="protect must be in"):
        dataclasses.replace(settings, protect=0.6)  # variants are checked too
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.protect = 0.7  # type: ignore[misc]


def test_unknown_or_bad_settings_fail_before_any_audio_is_read(converter, tmp_path):
    missing = tmp_path / "missing.wav"  # reading it would raise AudioReadError
    with pytest.raises(TypeError, match=r"VoiceConverter\.convert\(\) got an unexpected keyword argument 'pitch'; "
                                        r"the conversion settings are f0_up_key, index, index_rate, protect"):
        converter.convert(missing, pitch=3)
    with pytest.raises(TypeError, match=r"VoiceConverter\.convert_batch\(\) got an unexpected keyword argument "
                                        r"'idx_rate'"):
        converter.convert_batch([missing], idx_rate=0.5)
    with pytest.raises(TypeError, match=r"convert\(\): settings must be a ConversionSettings, got dict"):
        converter.convert(missing, settings={"protect": 0.2})
    with pytest.raises(TypeError, match="positional argument"):
        converter.convert(missing, 3)  # the settings are keyword-only
    with pytest.raises(ValueError, match="protect must be in"):
        converter.convert(missing, settings=ConversionSettings(), protect=0.9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'pitch'"):
        converter.convert_file(missing, tmp_path / "out.wav", pitch=3)
    assert not (tmp_path / "out.wav").exists()


def test_the_keyword_type_hints_name_every_setting():
    from typing import get_type_hints

    from rvc_peft.inference.settings import ConversionOverrides

    assert list(get_type_hints(ConversionOverrides)) == [f.name for f in dataclasses.fields(ConversionSettings)]


def test_convert_command_flags_become_settings(tmp_path, capsys):
    from rvc_peft.cli import build_parser, main

    parser = build_parser()
    args = parser.parse_args(["convert", "in.wav", "--base", "b.pth"])
    assert ConversionSettings.from_cli_args(args) == ConversionSettings()  # the CLI's defaults are the library's
    args = parser.parse_args(["convert", "in.wav", "--base", "b.pth", "--pitch", "-3", "--index-rate", "0",
                              "--protect", "0.4", "--rms-mix-rate", "0.5", "--filter-radius", "1", "--resample-sr",
                              "48000", "--speaker-id", "2", "--index", "v.index", "--f0-method", "pm"])
    assert ConversionSettings.from_cli_args(args) == ConversionSettings(
        f0_up_key=-3.0, index_rate=0.0, protect=0.4, rms_mix_rate=0.5, filter_radius=1, resample_sr=48000,
        speaker_id=2)  # --index and --f0-method are the converter's defaults (from_pretrained), not per call

    # a bad value is one clear error, before the (here unreadable) models are loaded
    sf.write(tmp_path / "in.wav", speech_like(0.5), 16000)
    (tmp_path / "base.pth").write_bytes(b"not a model")
    (tmp_path / "hubert").mkdir()
    code = main(["convert", str(tmp_path / "in.wav"), "--base", str(tmp_path / "base.pth"), "--content-encoder",
                 str(tmp_path / "hubert"), "--f0-method", "pm", "-o", str(tmp_path / "out"), "--protect", "0.7"])
    err = capsys.readouterr().err
    assert code == 1 and "rvc-peft convert: error: protect must be in [0, 0.5]" in err and "base.pth" not in err
    assert not (tmp_path / "out").exists()
