"""Bad input never reaches deep inside torch: each case names the file and the problem."""

import os
import pickle

import pytest
import torch

import rvc_peft
from rvc_peft.checkpoints import CheckpointError
from rvc_peft.testing import random_synthesizer, small_config


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "voice.pth"
    return rvc_peft.export_rvc(random_synthesizer(small_config("v2", True, 40000)), path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.pth: file not found"):
        rvc_peft.load_synthesizer(tmp_path / "nothing.pth")


def test_empty_file(tmp_path) -> None:
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pth: file is empty"):
        rvc_peft.load_synthesizer(tmp_path / "empty.pth")


def test_truncated_file(tmp_path, voice) -> None:
    data = voice.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth: truncated or damaged"):
        rvc_peft.load_synthesizer(tmp_path / "cut.pth")


def test_random_bytes(tmp_path) -> None:
    (tmp_path / "noise.pth").write_bytes(os.urandom(4096).replace(b"PK", b"xx"))
    with pytest.raises(CheckpointError, match=r"noise\.pth: not a (readable )?PyTorch checkpoint"):
        rvc_peft.load_synthesizer(tmp_path / "noise.pth")


class _RunsACommand:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = _RunsACommand()
    payload.marker = marker
    for name, writer in {
        "evil_zip.pth": lambda p: torch.save({"weight": payload}, p),
        "evil_legacy.pth": lambda p: p.write_bytes(pickle.dumps({"model": payload}, protocol=2)),
    }.items():
        writer(tmp_path / name)
        with pytest.raises(CheckpointError, match=rf"{name}: refusing to load: the file asks to run Python code"):
            rvc_peft.load_synthesizer(tmp_path / name)
    assert not marker.exists()


def test_discriminator_given_as_generator(tmp_path) -> None:
    path = rvc_peft.save_rvc_checkpoint(rvc_peft.MultiPeriodDiscriminator("v1"), tmp_path / "f0D40k.pth")
    with pytest.raises(CheckpointError, match=r"f0D40k\.pth: this is a discriminator \(D\) checkpoint"):
        rvc_peft.load_synthesizer(path)


def test_generator_given_as_discriminator(tmp_path, voice) -> None:
    with pytest.raises(CheckpointError, match=r"voice\.pth: this is an exported voice"):
        rvc_peft.load_discriminator(voice)
    base = rvc_peft.save_rvc_checkpoint(random_synthesizer(small_config()), tmp_path / "f0G40k.pth")
    with pytest.raises(CheckpointError, match=r"f0G40k\.pth: this is a synthesizer \(G\) checkpoint"):
        rvc_peft.load_discriminator(base)


def test_unknown_formats(tmp_path) -> None:
    torch.save({"state": 1, "epoch": 3}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: unknown format: .*found keys \[epoch, state\]"):
        rvc_peft.load_synthesizer(tmp_path / "other.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth: unknown format: the file holds a list"):
        rvc_peft.load_synthesizer(tmp_path / "list.pth")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07ONNX")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        rvc_peft.load_synthesizer(tmp_path / "model.onnx")


def test_other_vocoder_rejected(tmp_path, voice) -> None:
    ckpt = torch.load(voice, weights_only=True)
    ckpt["vocoder"] = "RefineGAN"
    torch.save(ckpt, tmp_path / "refine.pth")
    with pytest.raises(CheckpointError, match=r"refine\.pth: uses Applio's 'RefineGAN' vocoder"):
        rvc_peft.load_synthesizer(tmp_path / "refine.pth")


def test_weights_that_do_not_fit(tmp_path, voice) -> None:
    ckpt = torch.load(voice, weights_only=True)
    ckpt["weight"]["dec.conv_pre.weight"] = torch.zeros(3, 3, 3, dtype=torch.float16)
    del ckpt["weight"]["flow.flows.0.pre.bias"]
    torch.save(ckpt, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth: weights do not fit the model: 1 missing keys"):
        rvc_peft.load_synthesizer(tmp_path / "broken.pth")
    ckpt = torch.load(voice, weights_only=True)
    ckpt["weight"]["dec.conv_pre.weight"] = torch.zeros(3, 3, 3, dtype=torch.float16)
    torch.save(ckpt, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"dec\.conv_pre\.weight has shape \[3, 3, 3\] in the file"):
        rvc_peft.load_synthesizer(tmp_path / "shape.pth")


def test_wrong_version_requested(voice) -> None:
    with pytest.raises(CheckpointError, match="version=v1 was requested but the weights are v2"):
        rvc_peft.load_synthesizer(voice, version="v1")
    with pytest.raises(CheckpointError, match="sample_rate=48k was requested but the file is a 40k model"):
        rvc_peft.load_synthesizer(voice, sample_rate="48k")


def test_missing_hub_id_fails_fast(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="someone/voice/f0G40k.pth: not a local file and not downloadable"):
        rvc_peft.load_synthesizer("someone/voice", filename="f0G40k.pth")
    with pytest.raises(CheckpointError, match="voice.pth: file not found"):
        rvc_peft.load_synthesizer("voice.pth")
