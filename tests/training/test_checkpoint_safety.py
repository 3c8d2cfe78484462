"""Checkpoints hold no pickle and every file is checked on resume (issue 11: no code runs on resume).

A checkpoint folder is safetensors + JSON only. These tests plant hostile pickles under every file name accelerate's
`load_state` would have unpickled and show they never run; damage each of our files in every way we can think of
(missing, truncated, one bit flipped, wrong dtype/shape, NaN, bad JSON) and check the error names the file; refuse
the previous (pickle-based) format; and check that a save/load round trip restores every piece of state exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rvc_peft.training import TrainingSetupError, parse_args
from rvc_peft.training.checkpointing import STATE_FILE
from rvc_peft.training.trainer import RVCTrainer

from .utils import REPO_ROOT, narrow_discriminator, train_args

STEPS = ("--max_train_steps", "2", "--checkpointing_steps", "2", "--skip_final_validation",
         "--num_validation_clips", "0", "--learning_rate", "1e-3")
# every file accelerate's save_state wrote and load_state / torch.load unpickled (or would have read)
ACCELERATE_FILES = ("random_states_0.pkl", "random_states_1.pkl", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
                    "optimizer.bin", "optimizer_1.bin", "scaler.pt", "scheduler.bin", "scheduler_1.bin", "sampler.bin",
                    "dl_state_dict.bin", "pytorch_model.bin", "pytorch_model_1.bin", "model.safetensors")
SAFETENSORS_FILES = ("generator_trainable.safetensors", "discriminator_trainable.safetensors",
                     "optimizer_generator.safetensors", "optimizer_discriminator.safetensors", "rng_state_0.safetensors")
JSON_FILES = ("optimizer_generator.json", "optimizer_discriminator.json", "scheduler_generator.json",
              "scheduler_discriminator.json", "scaler.json", "rng_state_0.json")


class Hostile:
    """Unpickling this creates `marker`: what a malicious checkpoint would do with `os.system` instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _trainer(assets, out: Path, *extra: str) -> RVCTrainer:
    args = parse_args(train_args(assets["base"], assets["data"], out, *STEPS, *extra))
    return RVCTrainer(args, discriminator=narrow_discriminator("v2"))


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory) -> Path:
    """A finished 2-step run (full GAN objective, fully trained narrow D) and its checkpoint-2."""
    out = tmp_path_factory.mktemp("checkpoint-safety") / "run"
    _trainer(assets, out).train()
    return out / "checkpoint-2"


@pytest.fixture(scope="module")
def loader(assets, tmp_path_factory) -> RVCTrainer:
    """A set-up trainer of the same run, used only to load (broken) checkpoints into: a refused load changes
    nothing, so one trainer serves every failure test."""
    return _trainer(assets, tmp_path_factory.mktemp("loader") / "run")


@pytest.fixture
def checkpoint(trained, tmp_path) -> Path:
    """A private copy of the trained checkpoint, to damage."""
    return Path(shutil.copytree(trained, tmp_path / "checkpoint-2"))


def _refresh_manifest(folder: Path, name: str) -> None:
    """Record `name`'s new size and hash, as if the file had been written like this: the loader's own checks
    (not the checksum) must then catch the problem, as they must for a folder someone crafted."""
    state = json.loads((folder / STATE_FILE).read_text())
    data = (folder / name).read_bytes()
    state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / STATE_FILE).write_text(json.dumps(state))


def _plant_hostile_files(folder: Path, marker: Path) -> None:
    payload = pickle.dumps(Hostile(marker))
    pickle.loads(payload)  # control: the payload really runs when unpickled ...
    assert marker.exists()
    marker.unlink()  # ... and the marker is gone again before the real test
    for name in ACCELERATE_FILES:
        (folder / name).write_bytes(payload)


def test_checkpoint_holds_no_pickle(trained):
    for path in trained.iterdir():
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.suffix == ".safetensors", path.name
            load_file(path)
        assert not path.read_bytes().startswith(b"\x80"), path.name  # no pickle protocol header anywhere


def test_hostile_pickles_under_accelerate_names_are_never_read(checkpoint, loader, tmp_path):
    marker = tmp_path / "pwned"
    _plant_hostile_files(checkpoint, marker)
    state = loader.checkpoints.load(checkpoint)
    assert state["step"] == 2
    assert not marker.exists()


def test_resuming_next_to_hostile_pickles_runs_to_the_end_without_running_them(assets, trained, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(trained, out / "checkpoint-2")
    _plant_hostile_files(out / "checkpoint-2", marker)
    result = _trainer(assets, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest").train()
    assert result.global_step == 3 and not marker.exists()


def test_the_previous_pickle_based_format_is_refused_without_unpickling(checkpoint, loader, tmp_path):
    # a checkpoint of the previous version: accelerate's files and a training_state.json without a format tag
    marker = tmp_path / "pwned"
    for path in checkpoint.iterdir():
        if path.name != STATE_FILE and path.name != "generator_trainable.safetensors":
            path.unlink()
    _plant_hostile_files(checkpoint, marker)
    state = json.loads((checkpoint / STATE_FILE).read_text())
    old = {k: v for k, v in state.items() if k not in ("format", "format_version", "files", "num_processes")}
    (checkpoint / STATE_FILE).write_text(json.dumps(old))
    with pytest.raises(TrainingSetupError, match=r"checkpoint-2: this checkpoint was written by an older rvc-peft in "
                                                 r"accelerate's save_state format \(custom_checkpoint_0\.pkl, "
                                                 r"custom_checkpoint_1\.pkl, .*optimizer\.bin, .*random_states_0\.pkl, "
                                                 r".*scaler\.pt.*\), whose files are Python pickles that can run "
                                                 r"arbitrary code when loaded, so it is refused and none of it is read\. "
                                                 r"Start a new run, or finish this one with the trusted older"):
        loader.checkpoints.load(checkpoint)
    assert not marker.exists()


def test_the_previous_format_is_refused_by_the_trainer_before_anything_loads(assets, checkpoint, tmp_path):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    (checkpoint / STATE_FILE).write_text(json.dumps({k: v for k, v in state.items() if k != "format"}))
    trainer = _trainer(assets, tmp_path / "run", "--resume_from_checkpoint", str(checkpoint))
    with pytest.raises(TrainingSetupError, match="older rvc-peft in accelerate's save_state format"):
        trainer.resume()


def test_a_newer_format_is_refused(checkpoint, loader):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    (checkpoint / STATE_FILE).write_text(json.dumps({**state, "format_version": 3}))
    with pytest.raises(TrainingSetupError, match=rf"{STATE_FILE}: unsupported checkpoint format 'rvc-peft-checkpoint'"
                                                 r" version 3"):
        loader.checkpoints.load(checkpoint)


@pytest.mark.parametrize("name", SAFETENSORS_FILES + JSON_FILES)
def test_a_missing_file_is_an_error_naming_it(checkpoint, loader, name):
    (checkpoint / name).unlink()
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: missing from the checkpoint"):
        loader.checkpoints.load(checkpoint)


@pytest.mark.parametrize("name", SAFETENSORS_FILES + JSON_FILES)
def test_a_truncated_file_is_an_error_naming_it(checkpoint, loader, name):
    data = (checkpoint / name).read_bytes()
    (checkpoint / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: {len(data) // 2} bytes but {len(data)} were "
                                                 r"written \(truncated or replaced\)"):
        loader.checkpoints.load(checkpoint)
    _refresh_manifest(checkpoint, name)  # and without the checksum, the parser refuses it too
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: (not a readable safetensors file|unreadable "
                                                 r"checkpoint file)"):
        loader.checkpoints.load(checkpoint)


@pytest.mark.parametrize("name", SAFETENSORS_FILES + JSON_FILES)
def test_one_flipped_bit_is_an_error_naming_the_file(checkpoint, loader, name):
    data = bytearray((checkpoint / name).read_bytes())
    data[len(data) * 3 // 4] ^= 0x08  # in the tensor data / JSON body: still parses, but a value changed
    (checkpoint / name).write_bytes(bytes(data))
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: contents differ from what was written "
                                                 r"\(SHA-256 mismatch"):
        loader.checkpoints.load(checkpoint)


def test_a_damaged_state_file_is_an_error_naming_it(checkpoint, loader):
    data = (checkpoint / STATE_FILE).read_bytes()
    (checkpoint / STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{STATE_FILE}: unreadable checkpoint file"):
        loader.checkpoints.load(checkpoint)


def test_a_file_not_listed_in_the_state_file_is_refused(checkpoint, loader):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    del state["files"]["optimizer_generator.safetensors"]
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(TrainingSetupError, match=r"optimizer_generator\.safetensors: not listed in training_state"):
        loader.checkpoints.load(checkpoint)


def _rewrite_tensor(folder: Path, name: str, change) -> str:
    tensors = load_file(folder / name)
    key = next(k for k in sorted(tensors) if tensors[k].dim() > 0)  # a shaped tensor (not AdamW's step counter)
    tensors[key] = change(tensors[key])
    save_file(tensors, str(folder / name))
    _refresh_manifest(folder, name)
    return key


@pytest.mark.parametrize("name", SAFETENSORS_FILES)
@pytest.mark.parametrize("problem", ["dtype", "shape", "nan"])
def test_a_wrong_tensor_is_an_error_naming_the_file_and_tensor(checkpoint, loader, name, problem):
    if problem == "nan" and name.startswith("rng_state"):
        pytest.skip("generator states are uint8: no NaN")
    change = {"dtype": lambda t: t.double() if t.is_floating_point() else t.short(),
              "shape": lambda t: t.flatten()[:-1].clone(),
              "nan": lambda t: t.flatten().index_fill(0, torch.tensor([0]), float("nan")).reshape(t.shape)}[problem]
    key = re.escape(_rewrite_tensor(checkpoint, name, change))
    if name.startswith("rng_state"):
        expected = "'torch' must be a uint8 tensor of shape"
    else:
        expected = {"dtype": rf"{key}.* is torch\.float64", "shape": rf"{key} has shape",
                    "nan": rf"{key} holds NaN or infinite values"}[problem]
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: .*{expected}"):
        loader.checkpoints.load(checkpoint)


def test_an_extra_optimizer_tensor_is_refused(checkpoint, loader):
    name = "optimizer_generator.safetensors"
    tensors = load_file(checkpoint / name)
    save_file({**tensors, "evil": torch.zeros(1)}, str(checkpoint / name))
    _refresh_manifest(checkpoint, name)
    with pytest.raises(TrainingSetupError, match=rf"{name}: 1 tensors not listed in optimizer_generator\.json"):
        loader.checkpoints.load(checkpoint)


def _edit_json(folder: Path, name: str, edit) -> None:
    value = json.loads((folder / name).read_text())
    edit(value)
    (folder / name).write_text(json.dumps(value))
    _refresh_manifest(folder, name)


@pytest.mark.parametrize(("name", "edit", "expected"), [
    ("optimizer_generator.json", lambda v: v["param_groups"][0].update(lr="0.1"),
     r"parameter group 0 setting 'lr' is '0\.1'"),
    ("optimizer_generator.json", lambda v: v["param_groups"][0]["params"].pop(),
     r"parameter group 0 does not hold this run's trainable parameters"),
    ("optimizer_discriminator.json", lambda v: v["state"].update(x={"tensors": [], "values": {}}),
     r"state for 'x', which this run does not train"),
    ("scheduler_generator.json", lambda v: v.update(last_epoch=[2]), r"'last_epoch' is \[2\]"),
    ("scheduler_discriminator.json", lambda v: v["lr_lambdas"][0].update(kind="exec"),
     r"invalid learning-rate schedule \(unknown learning-rate schedule 'exec'\)"),
    ("scaler.json", lambda v: v.update(enabled="yes"), r"expected an object with 'enabled'"),
    ("rng_state_0.json", lambda v: v["python"]["state"].pop(), r"'python' is not a state of Python's random module"),
    ("rng_state_0.json", lambda v: v["numpy"].update(pos=10_000), r"'numpy' is not a NumPy MT19937 state"),
])
def test_a_wrong_json_value_is_an_error_naming_the_file(checkpoint, loader, name, edit, expected):
    _edit_json(checkpoint, name, edit)
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: {expected}"):
        loader.checkpoints.load(checkpoint)


@pytest.mark.parametrize("name", JSON_FILES)
def test_nan_in_json_is_an_error_naming_the_file(checkpoint, loader, name):
    text = (checkpoint / name).read_text()
    (checkpoint / name).write_text(text.replace("{", '{"x": NaN, ', 1))
    _refresh_manifest(checkpoint, name)
    with pytest.raises(TrainingSetupError, match=rf"checkpoint-2/{name}: unreadable checkpoint file \(non-finite "
                                                 r"number NaN"):
        loader.checkpoints.load(checkpoint)


def _snapshot(trainer: RVCTrainer) -> dict:
    return {
        "optimizers": [o.optimizer.state_dict() for o in (trainer.optimizer_g, trainer.optimizer_d)],
        "schedulers": [s.state_dict() for s in (trainer.scheduler_g, trainer.scheduler_d)],
        "scaler": trainer.accelerator.scaler.state_dict(),
        "weights": {n: p.detach().clone() for n, p in trainer.generator.named_parameters()
                    if p.requires_grad} | {f"d.{n}": p.detach().clone() for n, p in trainer.discriminator.named_parameters()},
        "rng": (torch.get_rng_state(), random.getstate(), np.random.get_state()),
    }


def _assert_same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), where


def test_save_then_load_restores_every_piece_of_state_exactly(assets, tmp_path):
    """Weights, both AdamW states (tensors and param groups), both schedulers, the fp16 scaler and every RNG come
    back bit-identical and with the same Python types — what the exact-resume test in test_training relies on."""
    trainer = _trainer(assets, tmp_path / "run")
    trainer.train()
    scaler = trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7, growth_interval=3)
    scaler.scale(torch.ones(()))  # the scaler's state exists once it scaled something
    scaler.update(2.0**5)  # a scale the default init would not give back
    random.random(), np.random.rand(), torch.rand(1)  # advance every generator past its seed
    before = _snapshot(trainer)
    path = trainer.checkpoints.save(7, {"note": "round trip"})
    # scramble everything the checkpoint holds
    trainer.scheduler_g.step()
    trainer.scheduler_d.step()
    trainer.optimizer_g.optimizer.state.clear()
    trainer.optimizer_d.param_groups[0]["lr"] = 0.5
    trainer.accelerator.scaler.update(1.0)
    with torch.no_grad():
        for p in trainer.discriminator.parameters():
            p.add_(1.0)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = trainer.checkpoints.load(path)
    assert state["step"] == 7 and state["note"] == "round trip"
    _assert_same(_snapshot(trainer), before)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str], cwd: Path) -> str:
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(REPO_ROOT / "tests" / "training" / "launch_narrow.py"), *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_two_processes_resume_exactly_from_each_ranks_own_random_state(assets, tmp_path):
    """accelerate launch, 2 CPU processes: 3 straight steps == 2 steps + resume (from a copy of the step-2 checkpoint,
    which holds one RNG state per rank) + 1 step, to the bit (same adapter digest on both ranks)."""
    common = ["--max_train_steps", "3", "--train_batch_size", "1", "--checkpointing_steps", "2",
              "--skip_final_validation", "--num_validation_clips", "0", "--learning_rate", "1e-3"]
    straight = _launch(train_args(assets["base"], assets["data"], tmp_path / "a", *common), tmp_path)
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors", "rng_state_0.json", "rng_state_1.json"} <= {
        p.name for p in (tmp_path / "a" / "checkpoint-2").iterdir()}
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    resumed = _launch(train_args(assets["base"], assets["data"], tmp_path / "b", *common,
                                 "--resume_from_checkpoint", "latest"), tmp_path)
    pattern = r"process (\d): adapter digest ([0-9a-f]{64}) after 3 steps"
    a, b = dict(re.findall(pattern, straight)), dict(re.findall(pattern, resumed))
    assert set(a) == set(b) == {"0", "1"}
    assert a == b and a["0"] == a["1"]
    assert "resumed from" in resumed


@pytest.mark.parametrize(("loss", "mode"), [("mel", "full"), ("mel_kl", "full"), ("full", "frozen"), ("full", "lora"),
                                            ("full", "full")])
def test_a_checkpoint_holds_exactly_what_a_resume_needs(assets, tmp_path, loss, mode):
    """Per mode, the tensors on disk are the trainable weights plus the AdamW state of the parameters that have
    one, byte for byte: no frozen weight, no second copy, no state of a frozen or never-updated parameter."""
    trainer = _trainer(assets, tmp_path / "run", "--loss", loss, "--discriminator_mode", mode, "--max_train_steps", "1",
                       "--checkpointing_steps", "1")
    trainer.train()
    folder = tmp_path / "run" / "checkpoint-1"
    models = {"generator": trainer.generator}
    optimizers = {"generator": trainer.optimizer_g.optimizer}
    if trainer.d_trainable:
        models["discriminator"], optimizers["discriminator"] = trainer.discriminator, trainer.optimizer_d.optimizer
    expected_files = {f"{name}_trainable.safetensors" for name in models}
    expected_files |= {f"optimizer_{name}.{ext}" for name in models for ext in ("safetensors", "json")}
    expected_files |= {f"scheduler_{name}.json" for name in models}
    expected_files |= {"rng_state_0.safetensors", "rng_state_0.json", "scaler.json", STATE_FILE}
    assert {p.name for p in folder.iterdir()} == expected_files
    for name, model in models.items():
        saved = load_file(folder / f"{name}_trainable.safetensors")
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        assert saved.keys() == trainable.keys()
        assert sum(t.nbytes for t in saved.values()) == sum(p.nbytes for p in trainable.values())
        state = load_file(folder / f"optimizer_{name}.safetensors")
        with_state = [p for p in trainable.values() if p in optimizers[name].state]
        assert with_state  # one update happened
        # exp_avg + exp_avg_sq shaped like the parameter, and a 4-byte step counter, for each updated parameter
        assert sum(t.nbytes for t in state.values()) == sum(2 * p.nbytes + 4 for p in with_state)
        assert {k.rsplit("/", 1)[0] for k in state} <= trainable.keys()
    if mode == "full" and loss == "full":
        frozen = [p for p in models["discriminator"].parameters() if not p.requires_grad]
        assert not frozen  # RVC's full D: every weight trains, so all of it and its AdamW state are needed
