"""Training from any folder (`python -m rvc_peft.train`, `rvc-peft-train`), the CPU thread policy, the help texts,
and a training run's stderr free of known-harmless library noise."""

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from rvc_peft.runtime import choose_num_threads, configure_threads, single_thread_worker
from rvc_peft.testing import small_config
from rvc_peft.training import TrainingSetupError, build_parser, parse_args
from rvc_peft.training.setup import check_dataset_fits, load_base_generator, load_training_dataset

from .utils import make_synthetic_dataset, train_args

# lines the libraries printed on every run before (issue 10.5); none may come back
NOISE = ("is_gradient_checkpointing", "were not passed to `accelerate launch`", "Grad strides do not match",
         "OMP_NUM_THREADS/MKL_NUM_THREADS unset")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the checkout
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def test_module_and_console_script_help_work_from_any_folder(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rvc_peft.train", "--help"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m rvc_peft.train") and "--num_threads" in done.stdout
    script = shutil.which("rvc-peft-train", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("rvc-peft-train is not installed (pip install -e .)")
    done = subprocess.run([script, "--pretrained_model_name_or_path", "x.pth"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "rvc-peft-train: error: the following arguments are required: --train_data_dir" \
        in done.stderr


def test_a_tiny_run_from_another_folder_trains_and_stays_quiet(assets, tmp_path):
    """`python -m rvc_peft.train` with cwd outside the repository: relative --output_dir lands there, the end-of-
    training reload check runs (it reloads the adapter through peft, which used to warn), and stderr holds no
    Python warning at all."""
    argv = train_args(assets["base"], assets["data"], tmp_path / "unused", "--loss", "mel_kl", "--max_train_steps",
                      "1", "--num_threads", "1")
    argv[argv.index("--output_dir") + 1] = "my_adapter"  # relative to the user's folder
    done = subprocess.run([sys.executable, "-m", "rvc_peft.train", *argv], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "my_adapter" / "adapter_model.safetensors").is_file()
    assert "end-of-training check" in done.stderr  # the reload ran
    assert "using 1 CPU thread(s) per process (--num_threads)" in done.stderr
    for line in NOISE:
        assert line not in done.stderr, line
    assert not re.search(r"\b\w+Warning: ", done.stderr), done.stderr[-4000:]


def test_run_returns_the_scripts_exit_codes(tmp_path, capsys):
    from rvc_peft.train import run

    (tmp_path / "my_data").mkdir()
    assert run(["--pretrained_model_name_or_path", str(tmp_path / "missing.pth"), "--train_data_dir",
                str(tmp_path / "my_data"), "--report_to", "none", "--output_dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err  # a missing path fails before torch loads, naming it
    assert err == f"error: no such file or folder: {tmp_path / 'missing.pth'}\n"
    assert run(["--pretrained_model_name_or_path", "org/base", "--train_data_dir", str(tmp_path / "my_dta"),
                "--report_to", "none"]) == 1
    assert capsys.readouterr().err == (f"error: no such file or folder: {tmp_path / 'my_dta'} "
                                       f"(did you mean '{tmp_path / 'my_data'}'?)\n")
    assert run(["--pretrained_model_name_or_path", "org/base", "--train_data_dir", str(tmp_path / "my_data"),
                "--num_threads", "0"]) == 1
    assert "error: --num_threads must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        run(["--no_such_option"])
    assert done.value.code == 2


# --- thread policy ------------------------------------------------------------------------------------------------

def test_thread_policy(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_num_threads(1, cores=8, busy=0.1)[0] == 8  # one process: every core
    assert choose_num_threads(3, cores=8, busy=0.0)[0] == 2  # 8 // 3
    assert choose_num_threads(16, cores=8, busy=0.0)[0] == 1  # never 0
    threads, why = choose_num_threads(1, cores=2, busy=1.0)  # another program holds one of two cores
    assert threads == 1 and "other programs keep 1.0 core(s) busy" in why
    assert choose_num_threads(2, cores=16, busy=4.2)[0] == 8  # siblings starting up would count as busy: not used
    assert choose_num_threads(1, cores=16, busy=4.2)[0] == 12  # 16 - 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert choose_num_threads(1, cores=8, busy=7.0, launcher_set=False) == (3, "OMP_NUM_THREADS")
    assert choose_num_threads(1, 5, cores=8) == (5, "--num_threads")  # and --num_threads over everything
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # accelerate launch's own default (even for one process): not a choice
    threads, why = choose_num_threads(1, cores=8, busy=0.0, launcher_set=True)
    assert threads == 8 and "the launcher's default OMP_NUM_THREADS=1 does not count" in why
    assert choose_num_threads(1, cores=8, busy=0.0)[0] == 1  # pytest's parent is no launcher: the user's 1
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    assert choose_num_threads(4, cores=8, busy=0.0)[0] == 2
    with pytest.raises(ValueError, match="--num_threads must be at least 1, got 0"):
        choose_num_threads(1, 0)


def test_configure_threads_sets_torch_and_the_trainer_calls_it(assets, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    before = torch.get_num_threads()
    try:
        assert configure_threads(1, requested=2) == 2 and torch.get_num_threads() == 2
        from rvc_peft.training.guards import build_accelerator

        build_accelerator(parse_args(train_args(assets["base"], assets["data"], tmp_path / "o", "--num_threads",
                                                "1")))
        assert torch.get_num_threads() == 1
        assert "using 1 CPU thread(s) per process (--num_threads)" in caplog.text
    finally:
        torch.set_num_threads(before)


def _worker_threads(_: int) -> tuple[int, int]:
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return torch.get_num_threads(), max(blas, default=1)


def test_data_loader_workers_use_one_thread():
    pytest.importorskip("threadpoolctl")
    loader = torch.utils.data.DataLoader(_ThreadsDataset(), batch_size=None, num_workers=1,
                                         worker_init_fn=single_thread_worker)
    assert [tuple(item) for item in loader] == [(1, 1)]  # (torch threads, BLAS threads) in the worker


class _ThreadsDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[int, int]:
        import numpy as np

        np.ones((64, 64)) @ np.ones((64, 64))  # start numpy's BLAS pool in the worker
        return _worker_threads(index)


# --- help texts and messages --------------------------------------------------------------------------------------

def test_every_option_is_described_once_with_its_default():
    from rvc_peft.cli import build_parser as build_cli

    parser = build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help and len(action.help) >= 15, action.option_strings
    cli = build_cli()
    train = next(a for a in cli._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for text in (parser.format_help(), train.format_help()):
        flat = " ".join(text.split())
        assert "(default: None)" not in flat and "(default: --" not in flat and "(default: False)" not in flat
        assert "discriminator learning rate; unset: the same as --learning_rate --lr_scheduler" in flat
        assert "generator (adapter) learning rate (default: 0.0001)" in flat
        assert "(RVC's value) (default: 1234)" in flat  # --seed: its value said once
        for block in re.split(r"\n  -", text):  # one option each: at most one "(default: ...)"
            assert block.count("(default:") <= 1, block


def test_dataset_that_does_not_fit_names_the_preprocess_flags(assets, tmp_path):
    v1 = make_synthetic_dataset(tmp_path / "v1data", small_config("v1"), n_rows=2, seconds=0.3)
    args = parse_args(train_args(assets["base"], v1, tmp_path / "out"))
    _, info = load_training_dataset(args)
    base = load_base_generator(args, info.sample_rate)
    with pytest.raises(TrainingSetupError) as caught:
        check_dataset_fits(info, base, str(assets["base"]), str(v1))
    message = str(caught.value)
    assert ("the dataset has v1 content features (256-d) but the base is an RVC v2 model (768-d), and RVC v1 "
            "models read the content encoder's 256-d projected output, v2 models its 768-d last layer") in message
    assert "rvc-peft preprocess --sample-rate 40k --version v2 ...)" in message and "--sample_rate" not in message


@pytest.mark.slow
def test_accelerate_launch_of_the_module_from_another_folder_is_quiet(assets, tmp_path):
    """`accelerate launch -m rvc_peft.train` with two CPU processes (DDP over gloo), from outside the repository, with
    the values accelerate asks for passed on the command line: no "values were not passed" block, no DDP or
    transformers warning on stderr."""
    import socket

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               "-m", "rvc_peft.train", *train_args(assets["base"], assets["data"], tmp_path / "out", "--loss",
                                                   "mel_kl", "--max_train_steps", "2", "--train_batch_size", "1")]
    done = subprocess.run(command, cwd=tmp_path, env=_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 process(es) x batch 1" in done.stderr and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    for line in NOISE:
        assert line not in done.stderr, line
    assert not re.search(r"\b\w+Warning: ", done.stderr), done.stderr[-4000:]
