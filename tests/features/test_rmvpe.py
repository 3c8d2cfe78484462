"""RMVPE: RVC's rmvpe.pt key layout, strict loading of random weights in that layout, mel front end, decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_peft.features import pitch
from rvc_peft.features.pitch import extract_f0
from rvc_peft.features.rmvpe import E2E, RMVPE, PitchError, RMVPELoadError, decode_salience, load_rmvpe
from rvc_peft.features.synthetic import voiced_signal


def _rvc_rmvpe_key_inventory() -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of RVC's ``E2E(4, 1, (2, 2))``, written from ``infer/lib/rmvpe.py``.

    ConvBlockRes = Sequential(Conv2d[0], BN[1], ReLU, Conv2d[3], BN[4], ReLU) + ``shortcut`` Conv2d 1x1 (with bias)
    when channels change; ResEncoderBlock.conv = ModuleList of 4 ConvBlockRes; ResDecoderBlock.conv1 =
    Sequential(ConvTranspose2d[0], BN[1], ReLU), .conv2 = ModuleList of 4 ConvBlockRes; fc = Sequential(BiGRU
    (``.gru``) [0], Linear [1], Dropout, Sigmoid).
    """
    keys: dict[str, tuple[int, ...]] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (channels,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    def conv_block_res(prefix: str, cin: int, cout: int) -> None:
        keys[f"{prefix}.conv.0.weight"] = (cout, cin, 3, 3)
        batch_norm(f"{prefix}.conv.1", cout)
        keys[f"{prefix}.conv.3.weight"] = (cout, cout, 3, 3)
        batch_norm(f"{prefix}.conv.4", cout)
        if cin != cout:
            keys[f"{prefix}.shortcut.weight"] = (cout, cin, 1, 1)
            keys[f"{prefix}.shortcut.bias"] = (cout,)

    batch_norm("unet.encoder.bn", 1)
    for i, (cin, cout) in enumerate([(1, 16), (16, 32), (32, 64), (64, 128), (128, 256)]):
        for j in range(4):
            conv_block_res(f"unet.encoder.layers.{i}.conv.{j}", cin if j == 0 else cout, cout)
    for i, (cin, cout) in enumerate([(256, 512), (512, 512), (512, 512), (512, 512)]):
        for j in range(4):
            conv_block_res(f"unet.intermediate.layers.{i}.conv.{j}", cin if j == 0 else cout, cout)
    for i, (cin, cout) in enumerate([(512, 256), (256, 128), (128, 64), (64, 32), (32, 16)]):
        keys[f"unet.decoder.layers.{i}.conv1.0.weight"] = (cin, cout, 3, 3)  # ConvTranspose2d: [in, out, kh, kw]
        batch_norm(f"unet.decoder.layers.{i}.conv1.1", cout)
        for j in range(4):
            conv_block_res(f"unet.decoder.layers.{i}.conv2.{j}", 2 * cout if j == 0 else cout, cout)
    keys["cnn.weight"], keys["cnn.bias"] = (3, 16, 3, 3), (3,)
    for suffix in ("", "_reverse"):
        keys[f"fc.0.gru.weight_ih_l0{suffix}"] = (3 * 256, 3 * 128)
        keys[f"fc.0.gru.weight_hh_l0{suffix}"] = (3 * 256, 256)
        keys[f"fc.0.gru.bias_ih_l0{suffix}"] = (3 * 256,)
        keys[f"fc.0.gru.bias_hh_l0{suffix}"] = (3 * 256,)
    keys["fc.1.weight"], keys["fc.1.bias"] = (360, 512), (360,)
    return keys


def _tiny_rmvpe(seed: int = 0) -> RMVPE:
    """Same family with 5 pooling levels (so the multiple-of-32 padding matters) but very few channels."""
    torch.manual_seed(seed)
    return RMVPE(E2E(n_blocks=1, inter_layers=1, en_out_channels=2))


# saved_rmvpe (a full-size random RMVPE file): tests/features/conftest.py


def test_key_inventory_matches_rvc_rmvpe_pt():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in E2E().state_dict().items()}
    expected = _rvc_rmvpe_key_inventory()
    assert sorted(set(expected) - set(ours)) == [] and sorted(set(ours) - set(expected)) == []
    assert ours == expected
    assert len(ours) == 741
    # spot checks of names quoted from RVC's rmvpe.pt
    assert ours["unet.encoder.layers.0.conv.0.conv.0.weight"] == (16, 1, 3, 3)
    assert ours["unet.intermediate.layers.0.conv.0.shortcut.weight"] == (512, 256, 1, 1)
    assert ours["unet.decoder.layers.4.conv2.0.conv.0.weight"] == (16, 32, 3, 3)
    assert ours["fc.0.gru.weight_ih_l0_reverse"] == (768, 384)


def test_random_weights_in_rvc_layout_load_strictly(saved_rmvpe):
    model, path = saved_rmvpe
    loaded = load_rmvpe(path)
    assert not loaded.training and isinstance(loaded.model, E2E) and loaded.weights_path == str(path)
    reference = model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    audio = voiced_signal(200.0, 0.2)[0]
    np.testing.assert_array_equal(loaded.infer_from_audio(audio), RMVPE(model).infer_from_audio(audio))


def test_float16_wrapped_and_counterless_state_dicts_load(saved_rmvpe, tmp_path):
    model, _ = saved_rmvpe
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    path = tmp_path / "rmvpe_fp16.pt"
    torch.save({"model": half}, path)
    loaded = load_rmvpe(tmp_path, filename="rmvpe_fp16.pt")  # a folder plus the file name inside it
    assert loaded.model.fc[1].weight.dtype == torch.float32
    assert torch.equal(loaded.model.fc[1].weight, half["fc.1.weight"].float())


def test_load_errors_name_the_file(saved_rmvpe, tmp_path):
    model, _ = saved_rmvpe
    # right shapes at almost no disk cost: each tensor is one stored element broadcast to its shape
    state = {k: torch.zeros(()).to(v.dtype).expand(v.shape) for k, v in model.state_dict().items()}

    missing = {k: v for k, v in state.items() if k != "cnn.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(RMVPELoadError, match=r"missing\.pt: not an RMVPE.*1 missing keys \['cnn\.bias'\]"):
        load_rmvpe(tmp_path / "missing.pt")

    wrong = dict(state, **{"fc.1.weight": torch.zeros(10, 512)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(RMVPELoadError, match=r"wrong\.pt: 1 tensors have the wrong shape.*fc\.1\.weight: "
                                             r"file \(10, 512\) vs model \(360, 512\)"):
        load_rmvpe(tmp_path / "wrong.pt")

    torch.save({"generator": {"x": torch.zeros(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(RMVPELoadError, match=r"foreign\.pt: expected a state dict of tensors"):
        load_rmvpe(tmp_path / "foreign.pt")

    (tmp_path / "garbage.pt").write_bytes(b"definitely not a torch file")
    with pytest.raises(RMVPELoadError, match=r"garbage\.pt: cannot be read as a PyTorch state dict"):
        load_rmvpe(tmp_path / "garbage.pt")

    with pytest.raises(RMVPELoadError, match=r"absent\.pt: no such RMVPE weights file"):
        load_rmvpe(tmp_path / "absent.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RMVPELoadError, match=r"no rmvpe\.pt in folder"):
        load_rmvpe(tmp_path / "empty")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": RMVPELoadError("x")}, tmp_path / "code.pt")
    with pytest.raises(RMVPELoadError, match=r"code\.pt: cannot be read .* weights_only=True"):
        load_rmvpe(tmp_path / "code.pt")


def test_hub_id_goes_through_huggingface_hub(saved_rmvpe, monkeypatch):
    _, path = saved_rmvpe
    calls = []

    def fake_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename, revision))
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert isinstance(load_rmvpe(), RMVPE)
    load_rmvpe("someone/my-rmvpe", filename="model.pt", revision="v1")
    assert calls == [("lj1995/VoiceConversionWebUI", "rmvpe.pt", None), ("someone/my-rmvpe", "model.pt", "v1")]


def test_unreachable_hub_id_gives_a_clear_error():  # HF_HUB_OFFLINE=1 (tests/conftest.py)
    with pytest.raises(RMVPELoadError, match=r"nobody-here/no-such-rmvpe/rmvpe\.pt: cannot fetch RMVPE weights"):
        load_rmvpe("nobody-here/no-such-rmvpe")


def test_decode_salience_against_hand_computation():
    def cents(k: float) -> float:  # bin k -> cents above 10 Hz
        return 20 * k + 1997.3794084376191

    salience = np.zeros((5, 360), np.float32)
    salience[0, [99, 100, 101]] = [0.3, 0.9, 0.6]
    salience[1, 50] = 0.02  # below the 0.03 threshold -> unvoiced
    salience[2, [0, 1, 2, 5, 300]] = [0.5, 0.8, 0.5, 0.4, 0.7]  # bin 300 is outside the +-4 window around 1
    salience[3, 80] = 0.03  # exactly the threshold -> unvoiced (<=)
    salience[4, [358, 359]] = [0.5, 0.5]  # upper edge: bins past 359 count as zero
    expected_cents = [
        (0.3 * cents(99) + 0.9 * cents(100) + 0.6 * cents(101)) / 1.8,  # = cents(100) + 3.333
        None,
        (0.5 * cents(0) + 0.8 * cents(1) + 0.5 * cents(2) + 0.4 * cents(5)) / 2.2,  # = cents(0) + 34.545
        None,
        cents(358.5),
    ]
    expected = [0.0 if c is None else 10 * 2 ** (c / 1200) for c in expected_cents]
    assert expected[0] == pytest.approx(10 * 2 ** (4000.7127417709524 / 1200))
    f0 = decode_salience(salience)
    assert f0.dtype == np.float32
    np.testing.assert_allclose(f0, expected, rtol=1e-6)
    np.testing.assert_array_equal(decode_salience(salience, threshold=0.01)[[1, 3]] > 0, [True, True])


def test_mel_front_end_matches_librosa():
    import librosa

    audio = voiced_signal(150.0, 0.5, noise_level=0.01)[0]
    ours = _tiny_rmvpe().log_mel(torch.from_numpy(audio)[None])[0].numpy()
    reference = librosa.feature.melspectrogram(
        y=audio, sr=16000, n_fft=1024, hop_length=160, win_length=1024, window="hann", center=True,
        pad_mode="reflect", power=1.0, n_mels=128, fmin=30, fmax=8000, htk=True)
    assert ours.shape == reference.shape == (128, 8000 // 160 + 1)
    np.testing.assert_allclose(ours, np.log(np.maximum(reference, 1e-5)), atol=2e-3)


@pytest.mark.parametrize("n_samples", [513, 1000, 5119, 16000, 16159])
def test_output_length_is_n_over_160_plus_1(n_samples):
    audio = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32) * 0.1
    f0 = _tiny_rmvpe().infer_from_audio(audio)
    assert f0.shape == (n_samples // 160 + 1,) and f0.dtype == np.float32


def test_too_short_audio_is_rejected():
    with pytest.raises(PitchError, match="RMVPE needs more than 512 samples of 16 kHz audio, got 512"):
        _tiny_rmvpe().infer_from_audio(np.zeros(512, np.float32))
    with pytest.raises(PitchError, match="'rmvpe' needs at least 513 samples of 16 kHz audio, got 400"):
        extract_f0(np.zeros(400, np.float32), "rmvpe", rmvpe_model=_tiny_rmvpe())


def test_mel_frames_are_zero_padded_to_a_multiple_of_32():
    model = _tiny_rmvpe()
    audio = torch.from_numpy(voiced_signal(220.0, 0.4)[0])[None]  # 41 frames -> padded to 64
    mel = model.log_mel(audio)
    padded = torch.nn.functional.pad(mel, (0, 64 - mel.shape[-1]), value=0.0)
    with torch.no_grad():
        expected = model.model(padded)[:, : mel.shape[-1]]
    torch.testing.assert_close(model.salience(audio), expected)


def test_extract_f0_rmvpe_plumbing(saved_rmvpe, monkeypatch):
    monkeypatch.setattr(pitch, "_MODEL_CACHE", {})
    model, path = saved_rmvpe
    audio = voiced_signal(200.0, 0.2)[0]
    tiny = _tiny_rmvpe()
    f0 = extract_f0(audio, "rmvpe", rmvpe_model=tiny)
    assert f0.shape == (20,) and f0.dtype == np.float32
    np.testing.assert_array_equal(f0, tiny.infer_from_audio(audio)[:20])
    np.testing.assert_allclose(extract_f0(audio, "rmvpe", rmvpe_model=tiny, f0_up_key=12), 2 * f0, rtol=1e-6)
    high = extract_f0(audio, "rmvpe", rmvpe_model=tiny, threshold=1.0)  # sigmoid never exceeds 1 -> all unvoiced
    np.testing.assert_array_equal(high, 0)

    from_file = extract_f0(audio, "rmvpe", rmvpe_model=path, p_len=23)
    again = extract_f0(audio, "rmvpe", rmvpe_model=str(path), p_len=23)
    assert len(pitch._MODEL_CACHE) == 1  # loaded once per (file, device)
    np.testing.assert_array_equal(from_file, again)
    np.testing.assert_array_equal(from_file[:21], RMVPE(model).infer_from_audio(audio))
    np.testing.assert_array_equal(from_file[21:], 0)


def test_bench_f0_scores_rmvpe_only_with_real_weights(saved_rmvpe, monkeypatch):
    import importlib.util
    from pathlib import Path

    monkeypatch.setattr(pitch, "_MODEL_CACHE", {})  # the run caches the 362 MB model: drop it afterwards
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_f0.py"
    spec = importlib.util.spec_from_file_location("bench_f0", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    speed_only = bench.run(["rmvpe"], 0.6, with_speech=False)
    entry = speed_only["results"]["rmvpe"]
    assert speed_only["rmvpe_weights"] == "random (speed only)" and entry["weights"] == "random"
    assert "RANDOM weights" in entry["note"] and set(entry["synthetic"]) == {"s_per_s", "cpu_s_per_s"}

    _, path = saved_rmvpe
    scored = bench.run(["rmvpe"], 0.6, with_speech=False, rmvpe_weights=str(path))
    entry = scored["results"]["rmvpe"]
    assert scored["rmvpe_weights"] == entry["weights"] == str(path) and "note" not in entry
    assert {"gpe_percent", "median_abs_cents", "vde_percent", "frames", "per_clip"} <= set(entry["synthetic"])
    assert set(entry["synthetic"]["per_clip"]) == set(scored["synthetic_clips"])
    # the benchmark's accuracy is that of extract_f0 with these weights, recomputed here for one clip
    name, audio, truth = bench.synthetic_set(0.6)[1]
    expected = bench.accuracy([(extract_f0(audio, "rmvpe", rmvpe_model=str(path)), truth)])  # cached by the run
    assert entry["synthetic"]["per_clip"][name] == {k: v for k, v in expected.items() if k != "frames"}
