"""`train_accelerate.py` itself (run in this interpreter with `runpy`: the same code `accelerate launch` starts in
each process; the multi-process launch is covered by test_multiprocess.py, `python -m rvc_peft.train` from another
folder by test_entry_and_threads.py), and the example accelerate configs."""

import logging
import runpy
import sys

import pytest

from .utils import REPO_ROOT, train_args

SCRIPT = str(REPO_ROOT / "train_accelerate.py")


def _run_script(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", [SCRIPT, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(SCRIPT, run_name="__main__")
    return done.value.code


def test_script_trains_an_adapter(assets, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    code = _run_script(monkeypatch, train_args(assets["base"], assets["data"], out, "--loss", "mel",
                                               "--max_train_steps", "2", "--skip_final_validation",
                                               "--num_threads", "1"))
    assert code == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert "1 process(es) x batch 2 x accumulation 1; 2 steps" in caplog.text
    assert "using 1 CPU thread(s) per process (--num_threads)" in caplog.text


def test_root_script_is_a_shell_over_the_module_entry():
    """train_accelerate.py keeps working from a checkout's root, and runs exactly `rvc_peft.train.run`."""
    text = (REPO_ROOT / "train_accelerate.py").read_text()
    assert "from rvc_peft.train import run" in text and "sys.exit(run())" in text


def test_script_reports_setup_errors_without_a_traceback(tmp_path, monkeypatch, capsys):
    code = _run_script(monkeypatch, ["--pretrained_model_name_or_path", str(tmp_path / "missing.pth"),
                                     "--train_data_dir", str(tmp_path / "nodata"), "--report_to", "none",
                                     "--output_dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 1
    assert stderr == f"error: no such file or folder: {tmp_path / 'missing.pth'}\n"  # before torch loads


def test_rvc_peft_train_command_trains_an_adapter(assets, tmp_path, capsys):
    from rvc_peft.cli import main as cli_main

    out = tmp_path / "out"
    code = cli_main(["train", *train_args(assets["base"], assets["data"], out, "--loss", "mel", "--max_train_steps",
                                          "1", "--num_validation_clips", "0", "--skip_final_validation")])
    assert code == 0
    assert (out / "adapter_model.safetensors").is_file() and "| steps | 1 |" in (out / "README.md").read_text()
    code = cli_main(["train", *train_args(assets["base"], tmp_path / "nodata", tmp_path / "out2")])
    stderr = capsys.readouterr().err
    assert code == 1 and stderr.endswith(f"rvc-peft train: error: no such file or folder: {tmp_path / 'nodata'}\n")
    assert "Traceback" not in stderr


def test_example_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"cpu": ("NO", 1, True), "single_gpu": ("NO", 1, False), "multi_gpu": ("MULTI_GPU", 4, False),
                "multi_node": ("MULTI_GPU", 8, False)}
    for name, (kind, processes, cpu) in expected.items():
        config = load_config_from_file(str(REPO_ROOT / "examples" / f"accelerate_config_{name}.yaml"))
        assert (config.distributed_type.value, config.num_processes, config.use_cpu) == (kind, processes, cpu)
