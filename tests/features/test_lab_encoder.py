"""The voice lab's MFCC content encoder: HuBERT's frame geometry, an independent MFCC computation, speaker/gain
normalisation, and loading through `load_content_encoder` with clear errors."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import scipy.fft
import torch

from rvc_peft.features.content_encoder import ContentEncoderError, load_content_encoder
from rvc_peft.features.lab_encoder import MFCCContentEncoder, lab_content_encoder, seeded_projection


def _signal(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: a 140 Hz pulse train through a slowly moving resonance, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    pulses = np.sign(np.sin(2 * np.pi * 140 * t)) * (0.5 + 0.4 * np.sin(2 * np.pi * 2 * t))
    return (np.convolve(pulses, np.hanning(40), "same") * 0.05 + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _reference_mfcc(wav: np.ndarray) -> np.ndarray:
    """The encoder's cepstra recomputed with numpy/scipy/librosa: 400-sample Hann frames every 320 samples, 512-point
    power spectrum, 40 Slaney mel bands (20-8000 Hz), log, orthonormal DCT-II, c1..c20, per-utterance CMVN."""
    frames = np.lib.stride_tricks.sliding_window_view(wav.astype(np.float64), 400)[::320]
    window = np.hanning(401)[:400]  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=8000.0).astype(np.float64)
    cepstra = scipy.fft.dct(np.log(power @ mel.T + 1e-6), type=2, norm="ortho", axis=1)[:, 1:21]
    return (cepstra - cepstra.mean(0)) / (cepstra.std(0) + 1e-5)


def test_frames_and_mfcc_match_an_independent_computation():
    encoder = lab_content_encoder("v2")
    for samples in (400, 719, 720, 16000, 23999):
        assert encoder.num_frames(samples) == (samples - 400) // 320 + 1  # HuBERT-base: (L - 400) // 320 + 1
    wav = _signal()
    ours = encoder.mfcc(torch.from_numpy(wav)[None])[0].numpy()
    reference = _reference_mfcc(wav)
    assert ours.shape == reference.shape == (encoder.num_frames(len(wav)), 20)
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    features = encoder.extract(wav)
    assert features.shape == (encoder.num_frames(len(wav)), 768)
    projection = seeded_projection(20, 768, 0).numpy()
    np.testing.assert_allclose(features, reference @ projection.T, atol=2e-2)
    assert abs(float(features.std()) - 1.0) < 0.05  # unit-variance cepstra stay unit-variance after projection


def test_features_ignore_loudness_and_keep_content():
    encoder = lab_content_encoder("v1")
    wav = _signal()
    # log + per-utterance normalisation: a gain drops out (up to the log's 1e-6 floor in near-silent bands)
    quiet, loud = encoder.extract(wav * 0.5), encoder.extract(wav)
    other = encoder.extract(_signal(seed=1)[::-1].copy())
    assert np.abs(quiet - loud).mean() < 0.1 * np.abs(other - loud).mean()
    assert loud.shape[1] == 256


def test_save_and_load_through_load_content_encoder(tmp_path):
    lab_content_encoder("v2", seed=3).save_pretrained(tmp_path / "enc", seed=3)
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["model_type"] == "rvc_lab_mfcc" and config["seed"] == 3
    wav = _signal()
    for version, dim in (("v1", 256), ("v2", 768)):
        loaded = load_content_encoder(tmp_path / "enc", version)
        assert isinstance(loaded, MFCCContentEncoder) and loaded.output_dim == dim and loaded.kind == "lab-mfcc"
        assert loaded.weights_path == str(tmp_path / "enc")
        np.testing.assert_array_equal(loaded.extract(wav), lab_content_encoder(version, seed=3).extract(wav))


def test_bad_folders_are_refused_with_the_file_named(tmp_path):
    folder = tmp_path / "enc"
    lab_content_encoder("v2").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"n_mels": 100000}))
    with pytest.raises(ContentEncoderError, match=r"config\.json: n_mels/fmin/fmax out of range"):
        load_content_encoder(folder, "v2")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ContentEncoderError, match=r"model\.safetensors: cannot read weights"):
        load_content_encoder(folder, "v2")
    from safetensors.torch import save_file

    save_file({"proj_v2.weight": torch.full((768, 20), float("nan"))}, str(folder / "model.safetensors"))
    with pytest.raises(ContentEncoderError, match="NaN or infinite"):
        load_content_encoder(folder, "v2")
    with pytest.raises(ContentEncoderError, match=r"no proj_v1\.weight"):
        load_content_encoder(folder, "v1")
    with pytest.raises(ContentEncoderError, match="too short"):
        lab_content_encoder("v2")(torch.zeros(1, 399))
