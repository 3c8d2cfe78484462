"""The inference fast path (`rvc_peft.inference.fast_path`) and the converter's backends (`backends.py`).

Measures: the fast path's fp32 audio against `RVCSynthesizer.infer` with the same seed (max abs ≤ 1e-4, the issue's
bar; measured ≤ 1e-7 on these models); bf16 against fp32 as the log-mel distance in dB of the streaming tests
(`log_mel_distance_db`: mean |Δ| of 80-band log-mel spectrograms, must be ≤ 1 dB); the "onnx" backend's conversion
against the "torch" backend's with the same seed (same prior noise, in-graph NSF noise): log-mel distance ≤ 0.5 dB
(measured 0.035 dB) and under a tenth of the distance to a conversion with another seed (2.9 dB).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from rvc_peft.inference import VoiceBank, VoiceConverter
from rvc_peft.inference.backends import BackendError
from rvc_peft.inference.evaluation import log_mel_distance_db
from rvc_peft.inference.fast_path import (
    FastDecoder,
    check_precision,
    mkldnn_bf16_supported,
    optimize_for_inference,
    plain_synthesizer,
)
from rvc_peft.models import has_weight_norm
from rvc_peft.testing import random_inputs, random_synthesizer, randomize_lora, small_config
from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

from .conftest import SMALL_WINDOW, speech_like, steady_pitch, tiny_synthesizer
from .test_streaming import spoken_sentence  # noqa: F401 - a fixture (espeak-ng sentence)

TOLERANCE = 1e-4


def seeded(function, seed: int = 7):
    torch.manual_seed(seed)
    return function()


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("use_f0", [True, False])
def test_fast_path_equals_the_reference(version, use_f0):
    model = random_synthesizer(small_config(version, use_f0, 48000))  # weight-normed, as loaded from RVC files
    x = random_inputs(model.config, frames=33, batch=2)
    x["phone_lengths"] = torch.tensor([33, 21])
    fast = optimize_for_inference(model)
    assert isinstance(fast.dec, FastDecoder) and not has_weight_norm(fast.dec.conv_pre)
    assert has_weight_norm(model.dec.ups[0])  # the caller's model is untouched
    expected, _, (z, _, _, _) = seeded(lambda: model.infer(**x))
    got, _, (z_fast, _, _, _) = seeded(lambda: fast.infer(**x))
    assert got.shape == expected.shape == (2, 1, 33 * model.config.hop_length)
    assert (got - expected).abs().max() <= TOLERANCE
    torch.testing.assert_close(z_fast, z, atol=1e-6, rtol=0)  # the same prior noise was drawn
    # RVC's realtime arguments go through the same infer
    chunk = {"skip_head": 10, "return_length": 15, "return_length2": 12}
    expected = seeded(lambda: model.infer(**x, **chunk))[0]
    got = seeded(lambda: fast.infer(**x, **chunk))[0]
    assert got.shape == expected.shape == (2, 1, 12 * model.config.hop_length)
    assert (got - expected).abs().max() <= TOLERANCE


def test_fast_path_merges_an_active_lora_voice():
    config = small_config("v2", True, 40000)
    peft_model = get_rvc_peft_model(random_synthesizer(config), RVCLoraConfig(target_modules="generator+flow", r=4))
    randomize_lora(peft_model, seed=3, scale=0.1)
    x = random_inputs(config, frames=30)
    with_voice = seeded(lambda: peft_model.get_base_model().infer(**x))[0]
    with peft_model.disable_adapter():
        base_only = seeded(lambda: peft_model.get_base_model().infer(**x))[0]
    assert (with_voice - base_only).abs().max() > 100 * TOLERANCE  # the voice matters
    fast = optimize_for_inference(peft_model)
    assert (seeded(lambda: fast.infer(**x))[0] - with_voice).abs().max() <= TOLERANCE
    with peft_model.disable_adapter():  # disabled adapters are left out of the copy
        plain = plain_synthesizer(peft_model.get_base_model())
    assert (seeded(lambda: plain.infer(**x))[0] - base_only).abs().max() <= TOLERANCE


@pytest.mark.skipif(not mkldnn_bf16_supported(), reason="bf16 fast path needs a CPU with avx512_bf16/AMX")
def test_bf16_stays_within_1_db_of_fp32():
    model = tiny_synthesizer(small_config("v2", True, 40000))  # unit-gain decoder: audible output
    x = random_inputs(model.config, frames=200)
    fp32 = seeded(lambda: optimize_for_inference(model).infer(**x))[0][0, 0].numpy()
    bf16_model = optimize_for_inference(model, "bf16")
    assert bf16_model.dec.ups[0].weight.dtype == torch.bfloat16
    bf16 = seeded(lambda: bf16_model.infer(**x))[0][0, 0].numpy()
    assert np.abs(fp32).max() > 0.05
    distance = log_mel_distance_db(bf16, fp32, model.config.sampling_rate)
    assert 0 < distance <= 1.0  # measured ~0.1 dB


def test_precision_errors():
    with pytest.raises(ValueError, match="fp16 is a GPU precision"):
        check_precision(torch.float16, "cpu")
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        optimize_for_inference(random_synthesizer(small_config()), "int8")
    with pytest.raises(TypeError, match="expected an RVCSynthesizer"):
        optimize_for_inference(torch.nn.Linear(2, 2))


# --- VoiceConverter backends -------------------------------------------------------------------------------------


def converter_for(bank, encoder, **kwargs):
    return VoiceConverter(bank, encoder, f0_method=steady_pitch, seed=0, window=SMALL_WINDOW, **kwargs)


def test_fast_backend_conversion_equals_torch(bank, encoder):
    audio = speech_like(1.5)
    reference = converter_for(bank, encoder).convert(audio, voice="alice")[0]
    fast = converter_for(bank, encoder, backend="torch-fast")
    got = fast.convert(audio, voice="alice")[0]
    assert got.shape == reference.shape and np.abs(got - reference).max() <= TOLERANCE
    other = fast.convert(audio, voice="bob")[0]  # a second voice gets its own prepared copy
    assert np.abs(other - got).max() > 100 * TOLERANCE and len(fast.backend._models) == 2


def test_onnx_backend_conversion_is_close_to_torch(bank, encoder, tmp_path):
    pytest.importorskip("onnxruntime")
    audio = speech_like(1.5)
    reference = converter_for(bank, encoder).convert(audio, voice="alice")[0]
    onnx = converter_for(bank, encoder, backend="onnx", onnx_cache_dir=tmp_path)
    got = onnx.convert(audio, voice="alice")[0]
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]
    other_seed = converter_for(bank, encoder)
    other_seed.seed = 1
    floor = log_mel_distance_db(other_seed.convert(audio, voice="alice")[0], reference, 40000)
    distance = log_mel_distance_db(got, reference, 40000)
    assert got.shape == reference.shape
    # only the NSF excitation noise differs (drawn inside the graph): measured 0.035 dB, another seed 2.9 dB
    assert distance <= 0.5 and distance < floor / 10


def test_backend_errors(bank, encoder):
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        converter_for(bank, encoder, backend="tensorrt")
    with pytest.raises(BackendError, match="bf16 is a fast-path precision"):
        converter_for(bank, encoder, precision="bf16")
    with pytest.raises(BackendError, match="onnxruntime has no bf16"):
        converter_for(bank, encoder, backend="onnx", precision="bf16")
    with pytest.raises(BackendError, match="fp16 is a GPU precision"):
        converter_for(bank, encoder, backend="torch-fast", precision="fp16")
    fast = converter_for(bank, encoder, backend="torch-fast")
    with pytest.raises(BackendError, match=r"mixes voices \['alice', 'bob'\].*backend='torch'"):
        fast.convert_batch([speech_like(0.5), speech_like(0.5)], ["alice", "bob"])


def test_stream_builds_a_streaming_converter(base, encoder):
    converter = VoiceConverter(VoiceBank(base), encoder, f0_method=steady_pitch, seed=0)
    streamer = converter.stream(block_seconds=0.25)
    assert streamer.converter is converter


def test_cli_convert_backends_agree(tmp_path, models, adapters):
    import soundfile as sf

    from .test_cli import run_convert

    sf.write(tmp_path / "in.wav", speech_like(0.8, seed=1), 16000)
    written = {}
    for backend in ("torch", "torch-fast"):
        out = tmp_path / f"{backend}.wav"
        assert run_convert([tmp_path / "in.wav"], out, models, "--adapter", str(adapters["alice"]), "--backend",
                           backend, "--float") == 0
        written[backend] = sf.read(out, dtype="float32")[0]
    assert np.abs(written["torch"] - written["torch-fast"]).max() <= TOLERANCE
    with pytest.raises(SystemExit):  # argparse refuses unknown choices
        run_convert([tmp_path / "in.wav"], tmp_path / "x.wav", models, "--precision", "int8")


def test_streaming_runs_through_the_converter_backend(bank, encoder):
    """A stream decodes through the converter's backend: "torch-fast" gives "torch"'s blocks (fp32, same seed);
    "onnx" decodes whole windows and keeps the block (more context at the edges, its own NSF noise)."""
    from rvc_peft.inference import StreamingConverter, stream_file

    audio = speech_like(1.2, seed=3)
    streamed = {}
    for backend, seed in (("torch", 0), ("torch", 1), ("torch-fast", 0), ("onnx", 0)):
        if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            continue
        converter = converter_for(bank, encoder, backend=backend)
        converter.seed = seed
        streamer = StreamingConverter(converter, voice="alice", block_seconds=0.2, extra_seconds=0.3,
                                      crossfade_seconds=0.04)
        streamed[backend, seed] = stream_file(streamer, audio).audio
    reference = streamed["torch", 0]
    assert np.abs(reference).max() > 0.05
    assert np.abs(streamed["torch-fast", 0] - reference).max() <= TOLERANCE
    if ("onnx", 0) in streamed:
        floor = log_mel_distance_db(streamed["torch", 1], reference, 40000)
        distance = log_mel_distance_db(streamed["onnx", 0], reference, 40000)
        assert streamed["onnx", 0].shape == reference.shape
        # measured 1.6 dB against 3.0 dB for another seed: the reference decodes each block alone (zero padding at
        # its edges), the graph the whole window; on this noise-dominated random model that alone moves the output
        # about as much as a new seed (torch's own block decode vs its whole-window decode: 3.1 dB)
        assert distance < 0.75 * floor


@pytest.mark.slow
@pytest.mark.skipif(not mkldnn_bf16_supported(), reason="bf16 fast path needs a CPU with avx512_bf16/AMX")
def test_bf16_conversion_of_speech_stays_within_1_db_on_the_lab_base(request):
    """The issue's bar on a base that really speaks: bf16 conversion of a spoken sentence vs fp32, same seed."""
    from rvc_peft.lab.assets import lab_base_files

    try:
        lab = lab_base_files()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    sentence = request.getfixturevalue("spoken_sentence")
    outputs = {}
    for precision in ("fp32", "bf16"):
        converter = VoiceConverter.from_pretrained(lab.synthesizer, content_encoder=str(lab.content_encoder),
                                                   f0_method="pm", seed=0, backend="torch-fast",
                                                   precision=precision)
        outputs[precision], rate = converter.convert(sentence)
    assert np.abs(outputs["fp32"]).max() > 0.1
    assert log_mel_distance_db(outputs["bf16"], outputs["fp32"], rate) <= 1.0  # measured 0.70 dB (1.01 with bf16 residual sums)
