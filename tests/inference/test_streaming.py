"""Streaming conversion (`rvc_peft.inference.streaming`): SOLA pieces, stream bookkeeping, closeness to `convert`.

The closeness measure (test_streamed_speech_matches_the_offline_conversion): the log-mel distance in dB, i.e. the
mean absolute difference of RVC's 80-band log-mel spectrograms (n_fft 1024, hop 10 ms, magnitudes in dB, floored
80 dB under the louder signal's peak), plus the correlation of the log-F0 tracks (Praat) on frames voiced in both.
Measured on the voice-lab base (pitch "pm", seed 0) with an espeak-ng sentence (en-us+m1, 2.9 s): the offline
conversion with another noise seed differs from it by 3.5 dB (the synthesizer samples noise: this is the floor);
the stream (0.5 s blocks, 1 s context, 50 ms crossfade) by 3.6 dB, F0 correlation 0.95; the same blocks without
context, crossfade or alignment by 5.3 dB. With the synthesizer's noise switched off (floor 0) the stream differs
by 2.4-3.6 dB on four clips (two voices, two sentences), the blind blocks by 4.0-4.9 dB.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from rvc_peft.inference.evaluation import log_mel_distance_db
from rvc_peft.inference.stream_io import stream_file
from rvc_peft.inference.streaming import StreamingConverter, crossfade_windows, sola_offset

from .conftest import SR_16K, speech_like

SENTENCE = "The quick brown fox jumps over the lazy dog."


# --- SOLA pieces ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 2, 7, 400, 2000])
def test_crossfade_windows_sum_to_one(length):
    fade_in, fade_out = crossfade_windows(length)
    assert fade_in.shape == fade_out.shape == (length,)
    np.testing.assert_allclose(fade_in + fade_out, 1.0, atol=1e-6)
    if length > 1:
        assert fade_in[0] == pytest.approx(0.0) and fade_in[-1] == pytest.approx(1.0)
        assert np.all(np.diff(fade_in) >= 0)
        t = np.linspace(0, 1, length)
        np.testing.assert_allclose(fade_in, np.sin(np.pi / 2 * t) ** 2, atol=1e-6)


def test_sola_offset_finds_a_known_shift():
    rng = np.random.default_rng(3)
    n, search, shift = 400, 160, 37
    signal = np.sin(2 * np.pi * 180 * np.arange(3000) / 16000) + 0.3 * rng.standard_normal(3000)
    reference = signal[1000 : 1000 + n]
    head = signal[1000 - shift : 1000 - shift + n + search] * 1.7 + 0.05 * rng.standard_normal(n + search)
    # independent computation: every candidate window scored with a plain loop
    scores = [np.dot(head[k : k + n], reference) / np.sqrt(np.dot(head[k : k + n], head[k : k + n]) + 1e-8)
              for k in range(search + 1)]
    assert sola_offset(head, reference, search) == int(np.argmax(scores)) == shift
    assert sola_offset(head, np.zeros(n), search) == 0  # the first block: nothing to align to
    assert sola_offset(head, reference, 0) == 0
    with pytest.raises(ValueError, match="at least 560 head samples"):
        sola_offset(head[:500], reference, search)


# --- stream bookkeeping on the tiny base -------------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "message"), [
    ({"block_seconds": 0.05, "crossfade_seconds": 0.08}, r"crossfade_seconds \(0.08\) must not exceed block_seconds"),
    ({"block_seconds": 0.004}, "block_seconds must be at least 0.01 s"),
    ({"crossfade_seconds": 0.0}, "crossfade_seconds must be at least 0.01 s"),
    ({"extra_seconds": -1.0}, "extra_seconds must be a finite number of seconds >= 0"),
    ({"block_seconds": float("nan")}, "block_seconds must be a finite number"),
    ({"block_seconds": 0.01, "crossfade_seconds": 0.01, "extra_seconds": 0.0, "sola_search_seconds": 0.0},
     "shorter than one content-encoder frame"),
    ({"f0_method": "yin"}, "unknown f0 method 'yin'"),
    ({"index_rate": 1.5}, r"index_rate must be in \[0, 1\]"),
    ({"rms_mix_rate": -0.1}, r"rms_mix_rate must be in \[0, 1\]"),
    ({"speaker_id": 500}, "speaker id 500 is out of range"),
])
def test_bad_settings_raise_clear_errors(converter, settings, message):
    with pytest.raises(ValueError, match=message):
        StreamingConverter(converter, **settings)


def test_process_rejects_bad_chunks(converter):
    streamer = StreamingConverter(converter, block_seconds=0.2, extra_seconds=0.3)
    with pytest.raises(ValueError, match=r"mono float samples \[n\] at 16 kHz"):
        streamer.process(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        streamer.process(np.full(10, np.nan, dtype=np.float32))


def test_chunk_sizes_do_not_change_the_stream(converter):
    """Input not a multiple of the block, fed in odd chunks: same output as whole blocks; lengths and latency."""
    audio = speech_like(1.33, seed=2)
    streamer = StreamingConverter(converter, block_seconds=0.2, extra_seconds=0.3, crossfade_seconds=0.04)
    assert (streamer.input_block_samples, streamer.output_block_samples) == (3200, 8000)  # 40 kHz base
    assert streamer.latency_seconds == pytest.approx(0.2 + 0.04 + 0.01)
    whole = stream_file(streamer, audio)
    odd = stream_file(streamer, audio, chunk_samples=1234)
    assert len(whole.audio) == len(odd.audio) == round(len(audio) * 40000 / SR_16K)
    np.testing.assert_array_equal(whole.audio, odd.audio)  # the seeded stream does not depend on chunking
    assert whole.report["algorithmic_latency_ms"] == pytest.approx(250.0)
    # blocks: the input plus the 45 ms output delay, in whole blocks of 200 ms
    assert whole.report["blocks"] == int(np.ceil((len(audio) / SR_16K + 0.045) / 0.2))
    assert whole.report["processing_ms_p95"] >= whole.report["processing_ms_mean"] > 0
    assert np.abs(whole.audio).max() > 0.05

    streamer.reset()
    sizes = [len(streamer.process(piece)) for piece in np.array_split(audio, 7)]
    assert sum(sizes) == (len(audio) // 3200) * 8000 and all(s % 8000 == 0 for s in sizes)
    rest = streamer.flush()
    assert len(rest) % 8000 == 0 and sum(sizes) + len(rest) >= len(whole.audio) + streamer.output_delay_samples


def test_seeded_stream_is_reproducible_and_leaves_the_global_rng_alone(converter):
    audio = speech_like(0.8, seed=4)
    streamer = StreamingConverter(converter, block_seconds=0.1, extra_seconds=0.2, crossfade_seconds=0.02)
    state = torch.get_rng_state()
    first = stream_file(streamer, audio).audio
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(first, stream_file(streamer, audio).audio)


def test_silence_in_gives_silence_out(converter):
    """With the loudness mix on (rms_mix_rate < 1, as RVC's realtime default), silence stays silent and a pause
    in speech stays a pause at the same place (the delay is removed)."""
    streamer = StreamingConverter(converter, block_seconds=0.1, extra_seconds=0.3, crossfade_seconds=0.03,
                                  rms_mix_rate=0.25)
    silent = stream_file(streamer, np.zeros(12000, dtype=np.float32)).audio
    assert np.abs(silent).max() < 1e-6
    speech = speech_like(1.2, seed=1)
    speech[8000:12800] = 0.0  # a 0.3 s pause from 0.5 s to 0.8 s
    out = stream_file(streamer, speech).audio  # 40 kHz
    pause = np.sqrt(np.mean(out[int(0.56 * 40000) : int(0.74 * 40000)] ** 2))
    voiced = np.sqrt(np.mean(out[int(0.1 * 40000) : int(0.45 * 40000)] ** 2))
    assert voiced > 0.02 and pause < 0.01 * voiced


# --- closeness to the offline conversion on the voice-lab base ------------------------------------------------------------

def log_f0_correlation(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    from rvc_peft.features.audio import resample
    from rvc_peft.features.pitch import extract_f0

    fa, fb = (extract_f0(resample(x.astype(np.float32), sample_rate, SR_16K), "pm") for x in (a, b))
    frames = min(len(fa), len(fb))
    voiced = (fa[:frames] > 0) & (fb[:frames] > 0)
    assert voiced.sum() > 30
    return float(np.corrcoef(np.log(fa[:frames][voiced]), np.log(fb[:frames][voiced]))[0, 1])


@pytest.fixture(scope="module")
def lab_converter():
    from rvc_peft.inference import VoiceConverter
    from rvc_peft.lab.assets import lab_base_files

    try:
        lab = lab_base_files()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return VoiceConverter.from_pretrained(lab.synthesizer, content_encoder=str(lab.content_encoder),
                                          f0_method="pm", seed=0)


@pytest.fixture(scope="module")
def spoken_sentence() -> np.ndarray:
    from rvc_peft.features.audio import resample
    from rvc_peft.lab.corpus import VOICES

    voice = VOICES["espeak-en-us-m1"]
    if voice.unavailable_reason() is not None:
        pytest.skip(f"espeak-en-us-m1: {voice.unavailable_reason()}")
    audio, rate = voice.synthesize(SENTENCE)
    return resample(np.asarray(audio, dtype=np.float32), rate, SR_16K)


@pytest.mark.slow
def test_streamed_speech_matches_the_offline_conversion(lab_converter, spoken_sentence):
    converter, audio = lab_converter, spoken_sentence
    rate = converter.sample_rate
    offline = converter.convert(audio, rms_mix_rate=1.0)[0]
    converter.seed = 1
    try:
        other_seed = converter.convert(audio, rms_mix_rate=1.0)[0]
    finally:
        converter.seed = 0
    streamer = StreamingConverter(converter, block_seconds=0.5, extra_seconds=1.0, crossfade_seconds=0.05)
    streamed = stream_file(streamer, audio)
    assert len(streamed.audio) == round(len(audio) * rate / SR_16K)
    assert streamed.report["algorithmic_latency_ms"] == pytest.approx(560.0)

    floor = log_mel_distance_db(other_seed, offline, rate)
    distance = log_mel_distance_db(streamed.audio, offline, rate)
    # the measure can fail: the same blocks without past context, crossfade or alignment
    blind = stream_file(StreamingConverter(converter, block_seconds=0.5, extra_seconds=0.0, crossfade_seconds=0.01,
                                           sola_search_seconds=0.0), audio).audio
    assert 2.5 < floor < 4.5  # measured 3.5
    assert distance < floor + 1.0  # measured 3.6
    assert log_mel_distance_db(blind, offline, rate) > distance + 1.0  # measured 5.3
    # the stream's delay is removed exactly: 25 ms off, the match is worse
    late = np.concatenate([np.zeros(rate // 40, dtype=np.float32), streamed.audio])
    assert log_mel_distance_db(late, offline, rate) > distance + 0.5
    assert log_f0_correlation(streamed.audio, offline, rate) > 0.9  # measured 0.95


# --- the CLI ---------------------------------------------------------------------------------------------------------

def test_cli_streams_a_file_and_reports_latency(models, tmp_path, capsys):
    import json

    import soundfile as sf

    from rvc_peft.cli import main

    source = tmp_path / "in.wav"
    sf.write(str(source), speech_like(1.05, seed=5), SR_16K)
    out, report = tmp_path / "out.wav", tmp_path / "report.json"
    code = main(["stream", str(source), "--base", str(models / "base.pth"), "--content-encoder",
                 str(models / "hubert"), "--f0-method", "pm", "--block-ms", "300", "--extra-ms", "400",
                 "--crossfade-ms", "40", "-o", str(out), "--report", str(report), "--seed", "0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    audio, rate = sf.read(str(out))
    assert rate == 40000 and len(audio) == round(1.05 * 40000)
    data = json.loads(report.read_text())
    assert data["algorithmic_latency_ms"] == pytest.approx(350.0) and data["blocks"] == 4
    assert f"-> {out}" in printed and "algorithmic latency 350 ms" in printed and "real-time factor" in printed


def test_cli_stream_errors(models, tmp_path, capsys, monkeypatch):
    from rvc_peft.cli import main

    base = ["--base", str(models / "base.pth"), "--content-encoder", str(models / "hubert")]
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError
    assert main(["stream", "--live", *base]) == 1
    assert "live streaming needs the optional package sounddevice" in capsys.readouterr().err
    source = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(str(source), speech_like(0.5), SR_16K)
    assert main(["stream", str(source), *base]) == 1
    assert "-o/--output is needed" in capsys.readouterr().err
    assert main(["stream", str(source), *base, "--live"]) == 1
    assert "give an INPUT file to stream, or --live (not both)" in capsys.readouterr().err
    assert main(["stream", str(source), *base, "-o", str(tmp_path / "o.wav"), "--block-ms", "20",
                 "--crossfade-ms", "50", "--f0-method", "pm"]) == 1
    assert "crossfade_seconds (0.05) must not exceed block_seconds (0.02)" in capsys.readouterr().err
