"""The README's main job: examples/demo.py trains an adapter on a held-out lab voice with the shipped lab base and
converts another voice's sentence into it. The result must be speech in the target voice: Resemblyzer similarity
(SECS) to the target's recordings >= 0.70 and >= 0.05 above the similarity to the source speaker, DNSMOS OVRL >= 2.5
(noise-like output scores ~1.1-2.0, clean synthetic speech 2.6-3.5)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from rvc_peft.lab.corpus import VOICES

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.py"


@pytest.mark.slow
def test_demo_converts_into_the_target_voice(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    import demo

    for name in (demo.TARGET_VOICE, demo.SOURCE_VOICE):
        if VOICES[name].unavailable_reason():
            pytest.skip(f"{name}: {VOICES[name].unavailable_reason()}")
    pytest.importorskip("resemblyzer")
    pytest.importorskip("speechmos")
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(out)], capture_output=True, text=True,
                          timeout=1800, check=False, cwd=tmp_path)  # from another folder, as a user might
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    info = json.loads((out / "dataset" / "rvc_dataset.json").read_text())
    assert info["num_rows"] >= 20 and info["version"] == "v2" and info["sample_rate"] == 32000
    adapter = out / "my_voice_lora"
    for name in ("adapter_config.json", "adapter_model.safetensors", "rvc_adapter.json", "README.md"):
        assert (adapter / name).is_file(), name
    assert len(list(adapter.glob("*.index"))) == 1
    audio, rate = sf.read(out / "converted" / "source.wav")
    assert rate == 32000 and abs(len(audio) / rate - sf.info(out / "source.wav").duration) < 0.05
    assert len(list((out / "recordings").glob("*.wav"))) == demo.RECORDING_SENTENCES
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "compare.png").stat().st_size > 10_000
    assert metrics["secs"] >= 0.70, metrics
    assert metrics["secs"] - metrics["secs_source"] >= 0.05, metrics
    assert metrics["dnsmos_ovrl"] >= 2.5, metrics
    assert "loads as RVCSynthesizer (32k)" in done.stdout
    assert json.loads((out / "demo.json").read_text())["status"] == "finished"


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "thesis.txt").write_text("irreplaceable")
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(mine)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode != 0 and "holds files that are not an earlier demo's" in done.stderr
    assert (mine / "thesis.txt").read_text() == "irreplaceable"
