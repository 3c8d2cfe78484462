"""A failed RMVPE load must leave nothing behind that blocks the next run (issue 11).

`build_dataset` records its settings (the RMVPE source included) in OUT/work/settings.json before it loads the
RMVPE weights; an unusable `--rmvpe` file used to be recorded there, and the next run with a corrected `--rmvpe`
was refused as "made with other settings". `resolve_rmvpe_file` now checks the file before anything is recorded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_peft.data import build_dataset
from rvc_peft.features.rmvpe import RMVPELoadError, resolve_rmvpe_file
from rvc_peft.features.synthetic import voiced_signal
from rvc_peft.testing import tiny_content_encoder


class ConstantPitch:
    """Stands in for an RMVPE model (`extract_f0` only needs `infer_from_audio`): 150 Hz everywhere."""

    def infer_from_audio(self, audio: np.ndarray, threshold: float = 0.03) -> np.ndarray:
        return np.full(len(audio) // 160 + 1, 150.0, dtype=np.float32)


@pytest.fixture
def audio_dir(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    audio, _ = voiced_signal(180.0, 1.5, 16000, seed=1)
    sf.write(folder / "a.wav", audio, 16000, subtype="FLOAT")
    return folder


@pytest.mark.parametrize(("content", "message"), [
    (b"definitely not a torch file", "cannot be read as a PyTorch state dict"),
    ({"x": torch.zeros(2)}, r"not an RMVPE \(E2E\) state dict"),
])
def test_a_failed_rmvpe_load_does_not_block_the_next_run(content, message, audio_dir, tmp_path):
    bad, out = tmp_path / "bad.pt", tmp_path / "out"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        torch.save(content, bad)
    encoder = tiny_content_encoder(seed=1, conv_channels=8)
    kwargs = {"sample_rate": "40k", "version": "v1", "f0_method": "rmvpe", "content_encoder": encoder,
              "progress": False}
    with pytest.raises(RMVPELoadError, match=f"bad.pt: {message}"):
        build_dataset(audio_dir, out, rmvpe=str(bad), **kwargs)
    assert not (out / "work" / "settings.json").exists()  # nothing recorded from the failed run

    info = build_dataset(audio_dir, out, rmvpe=ConstantPitch(), **kwargs)  # no --overwrite needed
    assert info.num_rows >= 1
    settings = json.loads((out / "work" / "settings.json").read_text())
    assert settings["rmvpe"] == "ConstantPitch (in memory)"


def test_resolve_checks_unless_told_not_to(tmp_path):
    bad = tmp_path / "rmvpe.pt"
    bad.write_bytes(b"not weights")
    with pytest.raises(RMVPELoadError, match=r"rmvpe\.pt: cannot be read"):
        resolve_rmvpe_file(bad)
    with pytest.raises(RMVPELoadError, match=r"rmvpe\.pt: cannot be read"):
        resolve_rmvpe_file(tmp_path)  # a folder holding rmvpe.pt
    assert resolve_rmvpe_file(bad, check=False) == bad  # load_rmvpe checks while it loads
