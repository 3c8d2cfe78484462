"""The web app's logic without a browser: input checks, the voice bank's facts, blends, conversions, exports,
error texts, and the training job's commands and progress parsing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_peft.app.state import AppError, Studio, read_input_audio
from rvc_peft.app.training_jobs import TrainingJob, TrainingSettings, check_recordings
from rvc_peft.inference.settings import ConversionSettings


@pytest.fixture(scope="module")
def studio(assets, tmp_path_factory):
    studio = Studio(work_dir=tmp_path_factory.mktemp("studio"))
    studio.add_voice(str(assets["alice"]))
    studio.add_voice(str(assets["bob"]))
    return studio


@pytest.mark.parametrize(("name", "message"), [
    ("text", "notes.txt is not an audio file"),
    ("fake_wav", "fake.wav could not be read as audio"),
    ("silence", "silence.wav is silent"),
])
def test_bad_inputs_are_named(assets, name, message):
    with pytest.raises(AppError, match=message):
        read_input_audio(assets[name])


def test_missing_and_short_inputs(tmp_path):
    with pytest.raises(AppError, match="No audio yet"):
        read_input_audio(None)
    short = tmp_path / "blip.wav"
    sf.write(short, np.full(800, 0.5, dtype=np.float32), 16000)  # 0.05 s
    with pytest.raises(AppError, match=r"blip.wav is too short \(0.05 s\)"):
        read_input_audio(short)


def test_voice_facts_and_blend(studio):
    table = {row[0]: row for row in studio.voice_table()}
    assert set(table) == {"alice", "bob"}
    alice_params = sum(p.numel() for n, p in studio.bank.peft_model.named_parameters() if ".alice." in n)
    assert table["alice"][1:] == ["adapter", "f0G32k.pth", 4, round(alice_params * 4 / 1e6, 2), 32000, 0]
    assert table["bob"][3] == 2
    version = studio.version
    name = studio.blend("mix", {"alice": 0.7, "bob": 0.3, "": 1.0})
    facts = studio.voice_facts(name)
    # PEFT's "cat" blend stacks the factors: the ranks add up, and so do the parameter counts
    assert facts["rank"] == 6 and facts["kind"] == "blend of 0.7×alice + 0.3×bob"
    assert facts["size (MB)"] == pytest.approx(table["alice"][4] + table["bob"][4], abs=0.011)
    assert studio.version == version + 1 and studio.base_loads == 1
    with pytest.raises(AppError, match="at least two voices"):
        studio.blend("solo", {"alice": 1.0, "bob": 0.0})
    with pytest.raises(AppError, match="already loaded"):
        studio.blend("mix", {"alice": 0.5, "bob": 0.5})
    studio.remove_voice("mix")
    assert "mix" not in studio.voice_names()


def test_adapter_of_another_base_is_refused(studio, assets):
    with pytest.raises(AppError, match=r"foreign.*was made for") as caught:
        studio.add_voice(str(assets["foreign"]))
    assert "Traceback" not in str(caught.value)
    assert studio.voice_names() == ["alice", "bob"]
    with pytest.raises(AppError, match="Enter an adapter folder"):
        studio.add_voice("  ")


def test_convert_writes_what_the_library_makes(studio, assets):
    settings = ConversionSettings(f0_up_key=2, f0_method="pm", index_rate=0.0, protect=0.4, rms_mix_rate=0.5)
    result = studio.convert(assets["speech"], "alice", settings)
    written, rate = sf.read(result.path, dtype="float32")
    expected, expected_rate = studio.converter.convert(str(assets["speech"]), f0_up_key=2, f0_method="pm",
                                                       protect=0.4, rms_mix_rate=0.5, index_rate=0.0, voice="alice")
    assert rate == expected_rate == 32000 and len(written) == len(expected) == result.samples
    np.testing.assert_allclose(written, expected, atol=1.5 / 32768)  # PCM-16 rounding only
    assert result.figure is not None and result.figure.read_bytes()[:4] == b"\x89PNG"
    assert result.metrics["mcd_db"] > 0 and "alice" in result.message
    with pytest.raises(AppError, match="no voice named 'nobody'"):
        studio.convert(assets["speech"], "nobody", settings)
    with pytest.raises(AppError, match="silence.wav is silent"):
        studio.convert(assets["silence"], "bob", settings)


def test_export_pth_speaks_like_the_bank(studio):
    from rvc_peft.checkpoints import load_synthesizer
    from rvc_peft.testing import random_inputs

    path = studio.export_pth("bob")
    exported = load_synthesizer(path).eval()
    inputs = random_inputs(studio.converter.config, frames=30, seed=3)
    studio.bank.activate("bob")
    with torch.no_grad():
        torch.manual_seed(0)
        mine = studio.bank.infer(**inputs)[0]
        torch.manual_seed(0)
        theirs = exported.infer(**inputs)[0]
        studio.bank.activate(None)
        torch.manual_seed(0)
        base_alone = studio.bank.infer(**inputs)[0]
    assert (mine - base_alone).abs().max() > 0.1  # the voice matters, so the comparison below means something
    # the .pth stores fp16 weights: equal up to that rounding
    assert torch.allclose(mine, theirs, atol=0.02), float((mine - theirs).abs().max())
    assert studio.base_loads == 1


def test_error_text_hides_tracebacks():
    pytest.importorskip("gradio")
    from rvc_peft.app.ui import AppUI, error_text

    with pytest.raises(AppError, match="invalid setting: protect must be in"):
        AppUI._settings(0, "pm", 0.0, 0.9, 0.25)

    assert error_text(AppError("x.wav is silent")) == "⚠️ x.wav is silent"
    try:
        {}["missing"]
    except KeyError as err:
        text = error_text(err)
    assert text.startswith("⚠️ Unexpected error (KeyError): 'missing'") and "Traceback" not in text


def test_training_job_commands_and_progress(assets, tmp_path):
    recordings = tmp_path / "takes"
    recordings.mkdir()
    (recordings / "readme.txt").write_text("not a take")
    with pytest.raises(AppError, match="holds no audio files"):
        check_recordings(recordings)
    with pytest.raises(AppError, match="not a folder"):
        check_recordings(tmp_path / "nowhere")
    (recordings / "sub").mkdir()
    sf.write(recordings / "sub" / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    settings = TrainingSettings(str(recordings), "new_voice", steps=30, batch_size=2, rank=4, f0_method="pm",
                                validation_every=50, final_check=False)
    job = TrainingJob(settings, base="base.pth", content_encoder="encoder", work_dir=tmp_path / "work",
                      sample_rate="40k", version="v1")
    preprocess, train = job.commands()
    assert preprocess[1:4] == ["-m", "rvc_peft.cli", "preprocess"]
    assert preprocess[preprocess.index("--sample-rate") + 1] == "40k"
    assert preprocess[preprocess.index("--version") + 1] == "v1"
    assert train[train.index("--max_train_steps") + 1] == "30"
    assert train[train.index("--validation_steps") + 1] == "30"  # at least once, at the end
    assert train[train.index("--loss") + 1] == "mel_kl" and "--skip_final_validation" in train
    assert "--resume_from_checkpoint" not in train
    assert job.commands(resume=True)[1][-2:] == ["--resume_from_checkpoint", "latest"]
    job._line("steps:  40%|████      | 12/30 [00:10<00:15,  1.2it/s, loss_g=48.3, mel=46.8]")
    job._line("steps:  43%|████▎     | 13/30 [00:11<00:15,  1.2it/s, loss_g=48.1, mel=46.5]")
    assert (job.step, job.total_steps) == (13, 30) and len(job.log) == 1
    with pytest.raises(AppError, match="no checkpoint to resume"):
        job.start(resume=True)
    with pytest.raises(AppError, match="letters, digits"):
        TrainingJob(TrainingSettings(str(recordings), "bad name!"), base="b", content_encoder="e",
                    work_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["-m", "rvc_peft.cli", "app"], ["app.py"]], ids=["rvc-peft app", "space"])
def test_command_serves_the_page(command, assets, tmp_path):
    """`rvc-peft app` and the Space's app.py start a server that answers with the page, with a voice preloaded."""
    pytest.importorskip("gradio")
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "RVC_PEFT_VOICES": str(assets["alice"])}
    extra = ["--voice", f"bobby={assets['bob']}", "--work-dir", str(tmp_path)] if command[0] == "-m" else []
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, *command, *extra], cwd=repo, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 90, ""
        while time.monotonic() < deadline and process.poll() is None and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page, process.stdout.read() if process.poll() is not None else "no answer within 90 s"
        assert "rvc-peft voice studio" in page
        expected = "bobby" if command[0] == "-m" else "alice"
        assert expected in page  # the preloaded voice is in the Convert tab's list
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_bad_base_option_is_an_error_message(tmp_path, capsys):
    from rvc_peft.cli import main

    assert main(["app", "--base", str(tmp_path / "missing.pth"), "--content-encoder", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "missing.pth" in err and "Traceback" not in err


def test_compare_scores_each_voice_against_the_input(studio, assets):
    from rvc_peft.inference.evaluation import evaluate

    settings = ConversionSettings(f0_method="pm", index_rate=0.0)
    results = studio.compare(assets["speech"], ["alice", "bob"], settings)
    assert [r.voice for r in results] == ["alice", "bob"] and len({r.path for r in results}) == 2
    for result in results:
        again = evaluate(str(result.path), str(assets["speech"]), f0_method="pm")  # the written file, re-scored
        assert result.metrics["mcd_db"] == pytest.approx(again["mcd_db"], abs=0.05)
        assert result.figure is not None and result.figure.is_file()
    assert results[0].metrics["mcd_db"] != results[1].metrics["mcd_db"]
    with pytest.raises(AppError, match="at least one voice"):
        studio.compare(assets["speech"], [], settings)


@pytest.mark.slow
def test_push_to_the_hub_then_add_by_hub_id(assets, tmp_path):
    """A blend pushed from the app (to a local fake of the Hub) loads back as a voice by its Hub id, same output."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.fakehub import hub_env, serve_fake_hub

    script = f"""
import numpy as np
from rvc_peft.app.state import AppError, Studio
studio = Studio(work_dir={str(tmp_path / "work")!r})
studio.add_voice({str(assets["alice"])!r})
studio.add_voice({str(assets["bob"])!r})
studio.blend("mix", {{"alice": 0.5, "bob": 0.5}})
print("URL", studio.push_to_hub("mix", "org/mix-voice"))
pulled = studio.add_voice("org/mix-voice", "pulled")
speech = {str(assets["speech"])!r}
a, _ = studio.converter.convert(speech, voice="mix", f0_method="pm")
b, _ = studio.converter.convert(speech, voice="pulled", f0_method="pm")
print("DIFF", float(np.abs(a - b).max()), studio.base_loads)
try:
    studio.push_to_hub("mix", "no-owner")
except AppError as err:
    print("ERR", err)
"""
    repo = Path(__file__).resolve().parents[2]
    with serve_fake_hub() as hub:
        env = hub_env(hub.endpoint, tmp_path / "cache", PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                              check=False, cwd=repo)
        files = hub.files("org/mix-voice")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)  # at the top, not in mix/
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line[:3] in ("URL", "DIF", "ERR"))
    diff, loads = lines["DIFF"].split()
    assert float(diff) < 1e-4 and loads == "1"
    assert lines["ERR"].startswith("Enter the Hub repository as user/name")
