"""The training loop end to end on tiny models (single process): learning, exact resume, artifacts, failures."""

import contextlib
import json
import math
import os
import re
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rvc_peft.training import CheckpointSaveError, NonFiniteLossError, OutOfMemoryError, main, parse_args
from rvc_peft.training.checkpointing import list_checkpoints, resolve_checkpoint
from rvc_peft.training.trainer import RVCTrainer

from .utils import narrow_discriminator, train_args


def _record_losses(monkeypatch) -> list[dict]:
    history = []
    original = RVCTrainer._reduce

    def recording(self, sums, count):
        losses, stop = original(self, sums, count)
        history.append(losses)
        return losses, stop

    monkeypatch.setattr(RVCTrainer, "_reduce", recording)
    return history


def _run(assets, out, *extra, discriminator=True):
    args = parse_args(train_args(assets["base"], assets["data"], out, *extra))
    return main(args, discriminator=narrow_discriminator("v2") if discriminator else None)


def test_overfitting_a_tiny_dataset_drives_the_mel_loss_down(assets, tmp_path, monkeypatch):
    history = _record_losses(monkeypatch)
    result = _run(assets, tmp_path / "out", "--max_train_steps", "12", "--learning_rate", "1e-2",
                  "--num_validation_clips", "0", "--max_train_samples", "3", "--skip_final_validation")
    mel = [h["loss/g/mel"] for h in history]
    assert len(mel) == 12 and result.global_step == 12
    assert np.mean(mel[-3:]) < 0.6 * mel[0], mel  # measured: about 160 -> 60
    # the objective as a whole falls too, although feature matching rises as the discriminator learns (KL is
    # noisy at this size and not asserted)
    total = [h["loss/g/total"] for h in history]
    assert np.mean(total[-3:]) < 0.7 * total[0], total  # measured: about 190 -> 100
    # RVC's full objective is what was optimised: every term is present and the total is their sum
    last = history[-1]
    assert last["loss/g/total"] == pytest.approx(last["loss/g/gen"] + last["loss/g/fm"] + last["loss/g/mel"]
                                                 + last["loss/g/kl"], rel=1e-5)
    assert np.isfinite(last["loss/d/total"]) and last["grad_norm_d"] > 0 and last["grad_norm_g"] > 0
    # rvc_exponential: 3 slices, batch 2 -> 2 steps per epoch; after 12 steps the rate decayed 6 times
    assert last["learning_rate"] == pytest.approx(1e-2 * 0.999875**6)


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("mode", ["full", "frozen", "lora"])
def test_only_adapter_and_chosen_tensors_change(assets, tmp_path, mode):
    args = parse_args(train_args(assets["base"], assets["data"], tmp_path / "out", "--max_train_steps", "1",
                                 "--discriminator_mode", mode, "--train_speaker_embedding", "--learning_rate", "1e-3",
                                 "--skip_final_validation", "--num_validation_clips", "0"))
    trainer = RVCTrainer(args, discriminator=narrow_discriminator("v2"))
    generator, discriminator = trainer.generator, trainer.discriminator
    g_before, d_before = _snapshot(generator), _snapshot(discriminator)
    trainer.train()
    g_changed = {n for n, p in generator.named_parameters() if not torch.equal(p, g_before[n])}
    trainable = {n for n, p in generator.named_parameters() if p.requires_grad}
    assert g_changed and g_changed <= trainable
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("modules_to_save" in n and "emb_g" in n for n in g_changed)  # --train_speaker_embedding
    assert {n for n in trainable if "lora_B" in n} <= g_changed  # B starts at zero: every adapter moved
    d_changed = {n for n, p in discriminator.named_parameters() if not torch.equal(p, d_before[n])}
    if mode == "full":
        assert d_changed == set(d_before)
    elif mode == "frozen":
        assert not d_changed
    else:
        assert d_changed and all("lora_" in n for n in d_changed)
        assert d_changed == {n for n, p in discriminator.named_parameters() if p.requires_grad}


def _interrupt_after(monkeypatch, calls: int) -> None:
    """Deliver a real SIGINT after the given number of micro-batches, as Ctrl-C would."""
    original, seen = RVCTrainer.train_step, []

    def step(self, batch):
        out = original(self, batch)
        seen.append(1)
        if len(seen) == calls:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(RVCTrainer, "train_step", step)


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(assets, tmp_path, monkeypatch):
    # 5 training slices, batch 2 -> 3 steps per epoch: the stop falls mid-epoch and the resumed part crosses an epoch
    common = ("--max_train_steps", "4", "--checkpointing_steps", "4", "--validation_steps", "2",
              "--learning_rate", "1e-3", "--skip_final_validation")
    straight = _run(assets, tmp_path / "a", *common)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        stopped = _run(assets, tmp_path / "b", *common)
    assert stopped.interrupted and stopped.global_step == 2
    assert [step for step, _ in list_checkpoints(tmp_path / "b")] == [2]  # Ctrl-C saved a checkpoint
    assert not (tmp_path / "b" / "adapter_model.safetensors").exists()
    resumed = _run(assets, tmp_path / "b", *common, "--resume_from_checkpoint", "latest")
    assert resumed.global_step == 4 and not resumed.interrupted
    assert resumed.adapter_digest == straight.adapter_digest
    for name in ("adapter_model.safetensors",):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("generator_trainable.safetensors", "discriminator_trainable.safetensors"):
        a, b = load_file(tmp_path / "a" / "checkpoint-4" / name), load_file(tmp_path / "b" / "checkpoint-4" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert straight.losses == resumed.losses


def test_a_stop_request_saves_first_and_skips_that_steps_validation(assets, tmp_path, monkeypatch):
    # accelerate launch SIGKILLs the workers 30 s after forwarding Ctrl-C: the checkpoint cannot wait for validation
    validated, real_validate = [], RVCTrainer.validate

    def validate(self):
        validated.append(self.global_step)
        return real_validate(self)

    monkeypatch.setattr(RVCTrainer, "validate", validate)
    _interrupt_after(monkeypatch, 2)  # batch 2, no accumulation: the stop comes during step 2
    out = tmp_path / "out"
    result = _run(assets, out, "--max_train_steps", "3", "--validation_steps", "1", "--skip_final_validation")
    assert result.interrupted and result.global_step == 2
    assert validated == [1]  # step 1 validated as usual, step 2 went straight to its checkpoint
    assert [step for step, _ in list_checkpoints(out)] == [2]


def test_end_of_training_saves_reloads_exports_indexes_and_pushes(assets, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.repocard import RepoCard

    import rvc_peft

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path)), tuple(ignore_patterns or ())))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    history = _record_losses(monkeypatch)
    out = tmp_path / "voice"
    result = _run(assets, out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--build_index",
                  "--export_rvc", str(tmp_path / "voice.pth"), "--push_to_hub", "--hub_model_id", "me/voice")
    assert len(history) == 2
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "rvc_adapter.json"):
        assert (out / name).is_file(), name
    card = RepoCard.load(out / "README.md")
    assert "## Training" in card.text and "| steps | 2 |" in card.text
    assert "validation mel_l1" in card.text  # the last validation's numbers are in the summary
    check = result.final_check
    assert check["max_abs_difference_vs_training_model"] <= 1e-6
    assert (out / "samples" / f"{check['clip']}_converted.wav").is_file()
    index_files = list(out.glob("added_IVF*_Flat_nprobe_1_voice_v2.index"))
    assert len(index_files) == 1
    # the exported RVC voice is the merged adapter: it converts like the trained model
    voice = rvc_peft.load_synthesizer(tmp_path / "voice.pth")
    assert not hasattr(voice, "enc_q") and voice.config.version == "v2"
    from peft import PeftModel

    from rvc_peft.training.validation import convert_clip

    trainer_clip = _first_clip(assets)
    reloaded = PeftModel.from_pretrained(rvc_peft.load_synthesizer(assets["base"]), str(out))
    expected = convert_clip(reloaded, trainer_clip)
    assert np.max(np.abs(convert_clip(voice, trainer_clip) - expected)) < 2e-2  # fp16 weights in the .pth
    # hub: repo created before training (fail fast), upload of adapter + card + index, never checkpoints
    assert calls[0] == ("create_repo", "me/voice")
    kind, repo, files, ignore = calls[-1]
    assert (kind, repo) == ("upload_folder", "me/voice")
    assert {"adapter_model.safetensors", "README.md", index_files[0].name} <= set(files)
    assert "checkpoint-*" in ignore and "logs/*" in ignore


def _first_clip(assets):
    from rvc_peft.data import load_rvc_dataset
    from rvc_peft.training.validation import make_clip

    dataset, _ = load_rvc_dataset(assets["data"])
    return make_clip(0, dataset.with_format("numpy")[0], assets["config"])


def test_checkpoints_hold_trainable_tensors_only_and_rotate(assets, tmp_path):
    out = tmp_path / "out"
    _run(assets, out, "--max_train_steps", "3", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
         "--skip_final_validation", "--num_validation_clips", "0")
    assert [step for step, _ in list_checkpoints(out)] == [2, 3]
    assert not list(out.glob(".tmp-checkpoint-*"))
    folder = out / "checkpoint-3"
    files = sorted(os.listdir(folder))
    assert files == ["discriminator_trainable.safetensors", "generator_trainable.safetensors",
                     "optimizer_discriminator.json", "optimizer_discriminator.safetensors", "optimizer_generator.json",
                     "optimizer_generator.safetensors", "rng_state_0.json", "rng_state_0.safetensors", "scaler.json",
                     "scheduler_discriminator.json", "scheduler_generator.json", "training_state.json"]
    generator = load_file(folder / "generator_trainable.safetensors")
    assert generator and all(re.search(r"\.lora_(A|B|embedding_A|embedding_B)\.", k) for k in generator), list(generator)
    state = json.loads((folder / "training_state.json").read_text())
    assert state["step"] == 3 and state["settings"]["rank"] == 8
    assert resolve_checkpoint(out, "latest") == folder


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG (RLIMIT_FSIZE; SIGXFSZ ignored, which would kill the process)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full and RLIMIT_FSIZE")
@pytest.mark.parametrize("failing_writer", ["safetensors", "json"])
def test_disk_full_while_saving_keeps_the_last_good_checkpoint(assets, tmp_path, monkeypatch, failing_writer):
    """Real write failures in the step-2 checkpoint, not mocks: the kernel refuses the bytes.

    safetensors: the checkpoint files are written under a 64-byte file-size limit (safetensors writes a temporary
    file and renames it, so only a limit reaches it). json: the optimiser's JSON file is a link to /dev/full, which
    fails every write with ENOSPC, exactly as a full disk does.
    """
    from rvc_peft.training.checkpointing import CheckpointManager

    real_write = CheckpointManager._write_files

    def write_files(self, folder):
        if not folder.name.endswith("checkpoint-2"):
            return real_write(self, folder)
        if failing_writer == "safetensors":
            with _file_size_limit(64):  # only around our checkpoint writes: nothing else writes meanwhile
                return real_write(self, folder)
        os.symlink("/dev/full", folder / "optimizer_generator.json")  # written by Path.write_text
        return real_write(self, folder)

    monkeypatch.setattr(CheckpointManager, "_write_files", write_files)
    out = tmp_path / "out"
    cause = {"safetensors": "SafetensorError", "json": "OSError"}[failing_writer]
    with pytest.raises(CheckpointSaveError, match=rf"checkpoint-2 \({cause}: .*the last complete checkpoint is "
                                                  r".*checkpoint-1\. Check the free disk space") as raised:
        _run(assets, out, "--max_train_steps", "3", "--checkpointing_steps", "1", "--skip_final_validation",
             "--num_validation_clips", "0")
    assert type(raised.value.__cause__).__name__ == cause
    assert sorted(os.listdir(out)) == ["checkpoint-1"]  # no .tmp-checkpoint-2 left behind
    assert resolve_checkpoint(out, "latest") == out / "checkpoint-1"
    assert load_file(out / "checkpoint-1" / "generator_trainable.safetensors")


def test_nan_loss_stops_with_a_clear_message_and_saves_nothing_broken(assets, tmp_path, monkeypatch):
    from rvc_peft.training import trainer as trainer_module

    real_mel_loss, calls = trainer_module.mel_loss, []

    def mel_loss(target, generated):
        calls.append(1)
        value = real_mel_loss(target, generated)
        return value * float("nan") if len(calls) == 2 else value

    monkeypatch.setattr(trainer_module, "mel_loss", mel_loss)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=r"loss/g/\w+ became nan at step 2.*checkpoint-1"):
        _run(assets, out, "--max_train_steps", "4", "--checkpointing_steps", "1", "--skip_final_validation",
             "--num_validation_clips", "0")
    assert [step for step, _ in list_checkpoints(out)] == [1]


def _all_finite(file) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(file).values())


def test_non_finite_gradients_with_a_finite_loss_stop_before_the_checkpoint(assets, tmp_path, monkeypatch):
    """The loss is computed before the update: an inf gradient (no fp16 scaler to skip the step) has a finite loss
    but writes NaN weights. That step must fail before its checkpoint, naming the last checkpoint, which is sound."""
    real_step, calls = RVCTrainer._step_optimizer, []

    def step_optimizer(self, optimizer, params):
        if optimizer is self.optimizer_g:
            calls.append(1)
            if len(calls) == 2:  # the generator's update of step 2
                for param in params:
                    param.grad.fill_(float("inf"))
        return real_step(self, optimizer, params)

    monkeypatch.setattr(RVCTrainer, "_step_optimizer", step_optimizer)
    history = _record_losses(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=r"grad_norm_g became inf at step 2; .*the last good checkpoint is "
                                                 r"\S+checkpoint-1\)"):
        _run(assets, out, "--max_train_steps", "3", "--checkpointing_steps", "1", "--skip_final_validation",
             "--num_validation_clips", "0")
    assert np.isfinite(history[-1]["loss/g/total"])  # the loss alone would not have caught it
    assert [step for step, _ in list_checkpoints(out)] == [1]
    for name in ("generator_trainable.safetensors", "discriminator_trainable.safetensors"):
        assert _all_finite(out / "checkpoint-1" / name), name


def test_an_update_that_leaves_a_weight_non_finite_is_caught_even_with_finite_gradients(assets, tmp_path,
                                                                                       monkeypatch):
    # e.g. an optimiser update that overflows: loss and gradient norm are finite, one weight is not
    real_step = RVCTrainer._step_optimizer
    broken = "base_model.model.dec.ups.0.lora_B.default.weight"

    def step_optimizer(self, optimizer, params):
        norm = real_step(self, optimizer, params)
        if optimizer is self.optimizer_g:
            with torch.no_grad():
                self.generator.get_parameter(broken).view(-1)[0] = float("nan")
        return norm

    monkeypatch.setattr(RVCTrainer, "_step_optimizer", step_optimizer)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=rf"the update made the trainable weight generator\.{re.escape(broken)} "
                                                 r"non-finite at step 1; .*no checkpoint was saved yet"):
        _run(assets, out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--skip_final_validation",
             "--num_validation_clips", "0")
    assert list_checkpoints(out) == [] and not list(out.glob(".tmp-checkpoint-*"))


def test_gradient_norms_are_those_of_the_accumulated_update(assets, tmp_path, monkeypatch):
    """With accumulation 2 the logged norms are the norms of the gradient each optimiser steps with, not half of it.

    The reference is computed independently, from the .grad tensors when AdamW's real step runs (no clipping)."""
    stepped: dict[int, list[float]] = {}
    real_step = torch.optim.AdamW.step

    def adamw_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        stepped.setdefault(id(self), []).append(math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads)))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", adamw_step)
    history = _record_losses(monkeypatch)
    args = parse_args(train_args(assets["base"], assets["data"], tmp_path / "out", "--max_train_steps", "2",
                                 "--train_batch_size", "1", "--gradient_accumulation_steps", "2",
                                 "--skip_final_validation", "--num_validation_clips", "0"))
    trainer = RVCTrainer(args, discriminator=narrow_discriminator("v2"))
    trainer.train()
    expected_g, expected_d = stepped[id(trainer.optimizer_g.optimizer)], stepped[id(trainer.optimizer_d.optimizer)]
    assert len(history) == len(expected_g) == len(expected_d) == 2  # one real step per update
    for logged, norm_g, norm_d in zip(history, expected_g, expected_d):
        assert logged["grad_norm_g"] == pytest.approx(norm_g, rel=1e-5)
        assert logged["grad_norm_d"] == pytest.approx(norm_d, rel=1e-5)


def test_out_of_memory_suggests_smaller_batches(assets, tmp_path, monkeypatch):
    def oom(self, batch):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RVCTrainer, "train_step", oom)
    with pytest.raises(OutOfMemoryError, match=r"--train_batch_size 1 .*--segment_frames 8"):
        _run(assets, tmp_path / "out", "--max_train_steps", "2", "--num_validation_clips", "0")


def test_mel_only_ablation_builds_no_discriminator(assets, tmp_path, monkeypatch, caplog):
    history = _record_losses(monkeypatch)
    args = parse_args(train_args(assets["base"], assets["data"], tmp_path / "out", "--loss", "mel", "--lora_preset",
                                 "all", "--max_train_steps", "1", "--skip_final_validation", "--learning_rate", "1e-3"))
    trainer = RVCTrainer(args)
    assert trainer.discriminator is None and trainer.optimizer_d is None
    generator = trainer.generator
    before = _snapshot(generator)
    trainer.train()
    assert set(history[0]) == {"loss/g/total", "loss/g/mel", "grad_norm_g", "learning_rate"}
    changed = {n for n, p in generator.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("base_model.model.dec.") for n in changed)
    assert not any(".enc_p." in n or ".flow." in n for n in changed)  # no gradient reaches them
    assert "get no gradient" in caplog.text


def test_mel_kl_trains_prior_and_flow_without_a_discriminator(assets, tmp_path, monkeypatch, caplog):
    """--loss mel_kl: RVC's mel and KL terms, no discriminator; unlike --loss mel the flow's adapter learns."""
    history = _record_losses(monkeypatch)
    args = parse_args(train_args(assets["base"], assets["data"], tmp_path / "out", "--loss", "mel_kl", "--lora_preset",
                                 "all", "--max_train_steps", "1", "--skip_final_validation", "--learning_rate", "1e-3"))
    trainer = RVCTrainer(args)
    assert trainer.discriminator is None and trainer.optimizer_d is None
    generator = trainer.generator
    before = _snapshot(generator)
    trainer.train()
    assert set(history[0]) == {"loss/g/total", "loss/g/mel", "loss/g/kl", "grad_norm_g", "learning_rate"}
    assert history[0]["loss/g/total"] == pytest.approx(history[0]["loss/g/mel"] + history[0]["loss/g/kl"], rel=1e-5)
    changed = {n for n, p in generator.named_parameters() if not torch.equal(p, before[n])}
    assert any(".flow." in n for n in changed) and any(n.startswith("base_model.model.dec.") for n in changed)
    assert "get no gradient" not in caplog.text
    card = (tmp_path / "out" / "README.md").read_text()
    assert "mel x45 + KL, no discriminator" in card


def test_one_loss_scaler_covers_both_optimizers(assets, tmp_path, monkeypatch):
    """fp16's GradScaler path (emulated on the CPU: a GradScaler("cpu") installed before `prepare`).

    A power-of-two scale is exact, so scaled training must equal unscaled training bit for bit, for G and for D; an
    overflowing scale must skip both optimiser steps and back the scale off once per optimiser.
    """
    from rvc_peft.training import trainer as trainer_module

    real_build = trainer_module.build_accelerator

    def trained(name, init_scale=None):
        def build(args):
            accelerator = real_build(args)
            if init_scale is not None:
                accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
            return accelerator

        monkeypatch.setattr(trainer_module, "build_accelerator", build)
        args = parse_args(train_args(assets["base"], assets["data"], tmp_path / name, "--max_train_steps", "1",
                                     "--skip_final_validation", "--num_validation_clips", "0"))
        trainer = RVCTrainer(args, discriminator=narrow_discriminator("v2"))
        before = _snapshot(trainer.discriminator), _snapshot(trainer.generator)
        trainer.train()
        after = _snapshot(trainer.discriminator), _snapshot(trainer.generator)
        return trainer, before, after

    _, _, plain_after = trained("plain")
    scaled, _, scaled_after = trained("scaled", init_scale=2.0**8)
    assert scaled.accelerator.scaler.get_scale() == 2.0**8
    for plain_state, scaled_state in zip(plain_after, scaled_after):
        assert all(torch.equal(plain_state[k], scaled_state[k]) for k in plain_state)
    overflow, before, after = trained("overflow", init_scale=2.0**127)
    assert overflow.optimizer_d.step_was_skipped and overflow.optimizer_g.step_was_skipped
    for state_before, state_after in zip(before, after):
        assert all(torch.equal(state_before[k], state_after[k]) for k in state_before)
    assert overflow.accelerator.scaler.get_scale() == 2.0**125


def test_bf16_mixed_precision_trains_on_the_cpu(assets, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    history = _record_losses(monkeypatch)
    AcceleratorState._reset_state(True)  # the precision is process-wide state in accelerate
    try:
        result = _run(assets, tmp_path / "out", "--mixed_precision", "bf16", "--max_train_steps", "1",
                      "--num_validation_clips", "0", "--learning_rate", "1e-3")
    finally:
        AcceleratorState._reset_state(True)
    assert len(history) == 1 and all(np.isfinite(v) for k, v in history[0].items() if k.startswith("loss/"))
    assert result.final_check["max_abs_difference_vs_training_model"] <= 1e-6  # the reload check runs in fp32
    assert "| mixed precision | bf16 |" in (tmp_path / "out" / "README.md").read_text()
