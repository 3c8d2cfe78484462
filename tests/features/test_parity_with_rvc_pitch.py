"""Pitch extraction against RVC's own code (the `rvc` wheel, installed with --no-deps as in scripts/setup.sh).

RVC is the independent reference: its `RMVPE` class loads our random state dict with its own strict
`load_state_dict`, and its `Pipeline.get_f0` runs pm, harvest and rmvpe with its post-processing (key shift,
harvest's median filter, the coarse mapping). Only the modules needed are imported (`rvc.lib.rmvpe`,
`rvc.modules.vc.pipeline`), never RVC's fairseq-bound parts, as in tests/models/test_parity_with_rvc.py.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rvc_peft.features.pitch import extract_f0, f0_to_coarse
from rvc_peft.features.rmvpe import load_rmvpe
from rvc_peft.features.synthetic import voiced_signal

rvc_rmvpe = pytest.importorskip("rvc.lib.rmvpe", reason="RVC reference code (pip install --no-deps rvc)")

_unique = itertools.count()


@pytest.fixture(scope="module")
def both_rmvpes(saved_rmvpe):
    """(RVC's RMVPE, ours), each loaded from the same random rmvpe.pt by its own code."""
    _, path = saved_rmvpe
    return rvc_rmvpe.RMVPE(str(path), is_half=False, device="cpu"), load_rmvpe(path)


@pytest.fixture(scope="module")
def voiced_clip() -> np.ndarray:
    """1 s at 16 kHz: a 170 Hz harmonic tone with vibrato and an unvoiced gap."""
    return voiced_signal(170.0, 1.0, unvoiced_gaps=[(0.4, 0.6)], seed=3)[0]


def test_rvc_rmvpe_loads_our_state_dict_strictly_and_agrees(saved_rmvpe, both_rmvpes, voiced_clip):
    model, _ = saved_rmvpe
    reference, ours = both_rmvpes
    # RVC's loader is torch.load + a strict load_state_dict into its E2E(4, 1, (2, 2)): every tensor arrived
    theirs = reference.model.state_dict()
    assert set(theirs) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key

    audio = voiced_clip[:11200]  # 0.7 s: 71 frames, padded to 96 inside both (a multiple of 32)
    x = torch.from_numpy(audio)[None]
    with torch.no_grad():
        mel_theirs = reference.mel_extractor(x, center=True)
        mel_ours = ours.log_mel(x)
    assert mel_ours.shape == mel_theirs.shape == (1, 128, len(audio) // 160 + 1)
    torch.testing.assert_close(mel_ours, mel_theirs, atol=1e-5, rtol=0)

    salience_theirs = reference.mel2hidden(mel_theirs)[0].numpy()
    salience_ours = ours.salience(x)[0].numpy()
    assert salience_ours.shape == salience_theirs.shape == (len(audio) // 160 + 1, 360)
    np.testing.assert_allclose(salience_ours, salience_theirs, atol=1e-5, rtol=0)

    # RVC's threshold, and one in the widest gap between frame peaks in their middle half, so that about half of
    # the frames are unvoiced and the voicing rule itself is compared (random weights voice everything at 0.03)
    peaks = np.sort(salience_theirs.max(axis=1))
    middle = peaks[len(peaks) // 4: 3 * len(peaks) // 4]
    widest = int(np.argmax(np.diff(middle)))
    assert middle[widest + 1] - middle[widest] > 1e-4  # far wider than the implementations' differences
    for threshold in (0.03, float(middle[widest] + middle[widest + 1]) / 2):
        expected = reference.infer_from_audio(audio, thred=threshold)
        f0 = ours.infer_from_audio(audio, threshold=threshold)
        np.testing.assert_array_equal(f0 > 0, expected > 0)
        np.testing.assert_allclose(f0, expected, rtol=1e-5, atol=1e-3)
    assert 0 < (f0 > 0).mean() < 1


@pytest.fixture(scope="module")
def rvc_pipeline(both_rmvpes):
    """RVC's inference `Pipeline` (40k), with RVC's RMVPE already loaded, as get_f0 would load it itself."""
    pipeline_module = pytest.importorskip("rvc.modules.vc.pipeline", reason="RVC's pipeline (needs faiss, "
                                          "parselmouth, pyworld, torchcrepe)")
    config = SimpleNamespace(x_pad=1, x_query=6, x_center=38, x_max=41, is_half=False, device="cpu")
    pipeline = pipeline_module.Pipeline(40000, config)
    pipeline.model_rmvpe = both_rmvpes[0]
    return pipeline


@pytest.mark.parametrize("key", [0, 5])
@pytest.mark.parametrize("method", ["pm", "harvest", "rmvpe"])
def test_get_f0_matches_rvc_pipeline(rvc_pipeline, both_rmvpes, voiced_clip, method, key):
    p_len = len(voiced_clip) // 160  # RVC's inference rule
    # get_f0 caches harvest by this "path": a fresh one per call keeps the calls independent
    coarse_theirs, f0_theirs = rvc_pipeline.get_f0(f"clip-{next(_unique)}", voiced_clip.copy(), p_len, key, method,
                                                   3)
    # RVC pads pm to p_len and keeps harvest's and rmvpe's native L // 160 + 1 frames
    assert len(f0_theirs) == (p_len if method == "pm" else p_len + 1)
    f0 = extract_f0(voiced_clip, method, p_len=len(f0_theirs), f0_up_key=key, filter_radius=3,
                    rmvpe_model=both_rmvpes[1])
    np.testing.assert_array_equal(f0 > 0, f0_theirs > 0)
    np.testing.assert_allclose(f0, f0_theirs, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(f0_to_coarse(f0), coarse_theirs)
    if method != "rmvpe":  # real analysis (no weights): the voiced frames are near the tone's 170 Hz +- vibrato
        voiced = f0[f0 > 0]
        assert len(voiced) > 0.6 * len(f0)
        assert np.median(np.abs(1200 * np.log2(voiced / (170.0 * 2 ** (key / 12))))) < 60
