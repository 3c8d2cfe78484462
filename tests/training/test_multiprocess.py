"""Two processes on the CPU through `accelerate launch --multi_gpu` (ACCELERATE_USE_CPU=1 -> MULTI_CPU, gloo, DDP).

Never `--cpu --num_processes 2`: that silently runs a single process.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys

from safetensors.torch import load_file

from .utils import REPO_ROOT, train_args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _digest_of(tensors: dict) -> str:
    """`adapter_digest` recomputed from a checkpoint's trainable tensors (same names, same order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].float().numpy().tobytes())
    return digest.hexdigest()


def _launch_two_cpu_processes(script: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(REPO_ROOT / "tests" / "training" / script), *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False)


def test_two_cpu_processes_train_one_identical_adapter_saved_once(assets, tmp_path):
    out = tmp_path / "out"
    result = _launch_two_cpu_processes("launch_narrow.py", train_args(
        assets["base"], assets["data"], out, "--max_train_steps", "3", "--train_batch_size", "1",
        "--gradient_accumulation_steps", "2", "--checkpointing_steps", "3", "--validation_steps", "2",
        "--report_to", "tensorboard"), tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    digests = dict(re.findall(r"process (\d): adapter digest ([0-9a-f]{64}) after 3 steps", log))
    assert set(digests) == {"0", "1"}, log[-4000:]  # really two processes
    assert digests["0"] == digests["1"]  # DDP kept the ranks in lockstep
    checkpoint = out / "checkpoint-3"
    assert _digest_of(load_file(checkpoint / "generator_trainable.safetensors")) == digests["0"]
    # one copy of everything, plus each rank's own RNG state
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "discriminator_trainable.safetensors", "generator_trainable.safetensors", "optimizer_discriminator.json",
        "optimizer_discriminator.safetensors", "optimizer_generator.json", "optimizer_generator.safetensors",
        "rng_state_0.json", "rng_state_0.safetensors", "rng_state_1.json", "rng_state_1.safetensors", "scaler.json",
        "scheduler_discriminator.json", "scheduler_generator.json", "training_state.json"]
    assert [p.name for p in out.rglob("adapter_model*.safetensors")] == ["adapter_model.safetensors"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    adapter = load_file(out / "adapter_model.safetensors")
    trained = load_file(checkpoint / "generator_trainable.safetensors")
    assert len(adapter) == len(trained)
    for name, tensor in trained.items():  # checkpoint names carry the adapter name, the saved adapter does not
        # (".default." inside Linear/Conv LoRA names, a trailing ".default" for an Embedding's lora_embedding_A/B)
        assert (adapter[re.sub(r"\.default(\.|$)", r"\1", name)] == tensor).all()
    assert "2 process(es) x batch 1 x accumulation 2; 3 steps (2 per epoch)" in log
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard, written by the main process only
    assert len(re.findall(r"end-of-training check: the saved adapter reloads", log)) == 1


def test_a_write_failure_on_one_rank_stops_both_and_the_final_wait_outlasts_the_default_timeout(tmp_path):
    """launch_ddp_failures.py: rank 0 hits a real EFBIG while saving, rank 1 writes fine; then the main process keeps
    the other one waiting at the end-of-training barrier for longer than the default process group's timeout."""
    out = tmp_path / "out"
    result = _launch_two_cpu_processes("launch_ddp_failures.py", [str(out)], tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    saves = {r["rank"]: r for r in reports if "save" in r}
    assert saves[0]["save"] == saves[1]["save"] == "CheckpointSaveError", log[-4000:]
    assert "checkpoint-2 (SafetensorError: " in saves[0]["message"]  # the real cause, on the rank that had it
    assert "(another process failed to write)" in saves[1]["message"]
    assert all("the last complete checkpoint is " in r["message"] for r in saves.values())
    assert [r["left"] for r in reports if "left" in r] == [["checkpoint-1"]] * 2  # no temporary folder left
    waits = [r["end_wait_s"] for r in reports if "end_wait_s" in r]
    assert len(waits) == 2 and min(waits) > 5  # longer than the 5 s default timeout, and both got through
