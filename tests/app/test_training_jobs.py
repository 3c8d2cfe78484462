"""A training job from the app, for real: preprocess + train in child processes, stop (checkpoint), resume, finish."""

from __future__ import annotations

import pytest

from rvc_peft.app.training_jobs import TrainingJob, TrainingSettings, wait_for

from .conftest import SENTENCES, speak


@pytest.mark.slow
def test_stop_then_resume_finishes_the_adapter(tmp_path):
    from rvc_peft.lab import lab_base_files

    recordings = tmp_path / "takes"
    recordings.mkdir()
    for i, sentence in enumerate(SENTENCES):
        speak(recordings / f"take{i}.wav", sentence, voice="en+f2")
    finished: list[tuple[str, str]] = []
    lab = lab_base_files()
    settings = TrainingSettings(str(recordings), "resumed", steps=4, batch_size=2, rank=2, f0_method="pm",
                                validation_every=4, final_check=False)
    job = TrainingJob(settings, base=str(lab.synthesizer), content_encoder=str(lab.content_encoder),
                      work_dir=tmp_path / "work", on_finished=lambda folder, name: finished.append((str(folder), name)))
    job.start()
    assert wait_for(lambda: job.step >= 1 or not job.running, timeout=240, interval=0.1), job.snapshot()["log"]
    job.stop()
    assert job.wait(timeout=120)
    view = job.snapshot()
    assert view["state"] == "stopped", view["log"]
    checkpoints = sorted(job.output_dir.glob("checkpoint-*"))
    assert checkpoints and 1 <= int(checkpoints[-1].name.split("-")[1]) < 4
    assert not (job.output_dir / "adapter_model.safetensors").exists() and finished == []
    assert view["losses"]["loss/g/total"][0][0] == 1  # read back from the TensorBoard log while it ran

    job.start(resume=True)
    assert job.wait(timeout=240)
    view = job.snapshot()
    assert view["state"] == "finished", view["log"]
    assert any("resumed from" in line for line in job.log)
    assert (job.output_dir / "adapter_model.safetensors").is_file()
    assert finished == [(str(job.output_dir), "resumed")]
    assert [step for step, _ in view["losses"]["loss/g/total"]] == [1, 2, 3, 4]  # both runs' logs, once each
    assert view["validation_audio"] is not None and view["validation_audio"].read_bytes()[:4] == b"RIFF"
