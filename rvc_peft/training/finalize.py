"""End of training (main process): save the adapter with its card, then the optional extras, then prove it loads.

Order: adapter (`save_pretrained`: adapter_config.json, adapter_model.safetensors, rvc_adapter.json, README.md with a
training summary) -> retrieval index (`--build_index`) -> reload check: a freshly loaded base plus the saved adapter
converts a held-out clip, saved under `samples/` and logged as "test" (diffusers' final validation) -> merged RVC
voice (`--export_rvc`) -> upload (`--push_to_hub`: adapter, card, index, samples; no checkpoints or logs).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate.logging import get_logger

from ..utils.files import write_folder_atomically
from .validation import convert_clip, mel_l1, tensorboard_writer

if TYPE_CHECKING:  # the trainer imports this module
    from .config import TrainingConfig
    from .trainer import RVCTrainer, TrainingResult

logger = get_logger(__name__)

HUB_IGNORE = ["checkpoint-*", "checkpoint-*/*", ".tmp-checkpoint-*", ".tmp-save-*", "logs/*", "logs/**", "*.pth"]
# how long the other processes wait for the main one's end-of-training work (index, reload check, export, upload)
END_OF_TRAINING_TIMEOUT = timedelta(hours=24)


class EndOfTrainingBarrier:
    """Where the other processes wait for the main one at the end of training; create it on every process.

    Only the main process builds the index, reloads, exports and uploads; the others wait so that all of them shut
    the process group down together (an NCCL teardown can block or hang while a peer still uses the group). On the
    default process group that wait is a collective under its timeout (NCCL: 10 minutes), and a slow upload would
    kill the job after training succeeded. Raising the default timeout would also delay the detection of a hung
    training step, so this wait gets a gloo group of its own with a long timeout. Gloo notices a peer that exits,
    so a main process that fails here still ends the others at once, not after the timeout. The group is created at
    setup, so that a network problem with it shows before training rather than after.
    """

    def __init__(self, accelerator: Any, timeout: timedelta = END_OF_TRAINING_TIMEOUT) -> None:
        self.accelerator = accelerator
        self.group = None
        if accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
            try:
                self.group = dist.new_group(backend="gloo", timeout=timeout)
            except (RuntimeError, ValueError) as err:  # e.g. a backend set up without a store gloo can use
                logger.warning("no gloo group for the end-of-training wait (%s): the processes will wait for the main "
                               "one under the default timeout, which a long upload can exceed", err)

    def wait(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)
        else:  # one process (no-op), or a launcher without torch.distributed (e.g. XLA)
            self.accelerator.wait_for_everyone()


def training_summary(trainer: RVCTrainer, elapsed: float) -> dict[str, Any]:
    """The model card's training table."""
    args, info = trainer.args, trainer.dataset_info
    seconds = sum(int(n) for n in trainer.train_dataset.frames) / 100.0
    summary = {
        "dataset": Path(args.train_data_dir).name, "training slices": len(trainer.train_dataset),
        "training audio (minutes)": round(seconds / 60.0, 2), "f0 method": info.f0_method,
        "steps": trainer.global_step, "epochs": round(trainer.global_step / trainer.updates_per_epoch, 2),
        "batch size (per process x processes x accumulation)":
            f"{args.train_batch_size} x {trainer.accelerator.num_processes} x {args.gradient_accumulation_steps}",
        "learning rate": f"{args.learning_rate:g} ({args.lr_scheduler}, warm-up {args.lr_warmup_steps})",
        "loss": {"full": "RVC full: mel x45 + KL + feature matching x2 + LSGAN", "mel_kl": "mel x45 + KL, no "
                 "discriminator", "mel": "mel L1 only"}[args.loss],
        "discriminator": f"{args.discriminator_mode}, from {trainer.discriminator_source}" if args.loss == "full"
                         else "none",
        "speaker embedding trained": bool(args.train_speaker_embedding),
        "mixed precision": trainer.accelerator.mixed_precision, "seed": args.seed,
        "training time (minutes)": round(elapsed / 60.0, 1),
    }
    for key, value in trainer.last_validation.items():
        summary[f"validation {key}"] = round(value, 4) if np.isfinite(value) else None
    return summary


def _save_adapter(trainer: RVCTrainer, elapsed: float) -> Path:
    from ..tuners import set_training_summary

    model = trainer.generator
    set_training_summary(model, training_summary(trainer, elapsed))
    # Through a staging folder: PEFT writes adapter_config.json with plain open() calls, so a full disk would leave a
    # truncated config beside the previous run's weights; staged, each file is replaced only by a complete one (a
    # full disk raises DiskFullError naming the file) and gets the mode open() gives (safetensors writes 0o600).
    # README.md is carried in so that the card is updated, not recreated, as a direct save would.
    # save_embedding_layers=False: PEFT's vocabulary check would look the base path up on the Hub
    write_folder_atomically(trainer.output_dir,
                            lambda staging: model.save_pretrained(str(staging), save_embedding_layers=False),
                            carry=("README.md",))
    return trainer.output_dir


def _build_index(trainer: RVCTrainer) -> Path:
    from ..data.index import build_index_from_dataset, rvc_index_filename, save_index

    index = build_index_from_dataset(trainer.dataset, seed=trainer.args.seed)
    import faiss

    lists = faiss.extract_index_ivf(index).nlist
    path = trainer.output_dir / rvc_index_filename(lists, trainer.output_dir.name, trainer.config.version)
    save_index(index, path)
    logger.info("retrieval index written to %s", path)
    return path


def reload_and_convert(trainer: RVCTrainer) -> tuple[dict[str, Any], Any]:
    """Load the base from scratch, put the saved adapter on it, convert the first held-out clip (or a training
    slice if none is held out) and compare with the in-memory model. Returns (report, reloaded PeftModel)."""
    from peft import PeftModel

    from ..checkpoints import load_synthesizer
    from .validation import make_clip

    args = trainer.args
    clips = trainer.validator.clips or [make_clip(int(trainer.train_dataset.indices[0]),
                                                  trainer.train_dataset.raw_row(0), trainer.config)]
    clip = clips[0]
    live = convert_clip(trainer.generator, clip)
    base = load_synthesizer(args.pretrained_model_name_or_path, revision=args.revision,
                            sample_rate=trainer.config.sampling_rate)
    reloaded = PeftModel.from_pretrained(base, str(trainer.output_dir)).to(trainer.accelerator.device)
    audio = convert_clip(reloaded, clip)
    difference = float(np.max(np.abs(audio - live))) if audio.shape == live.shape else float("inf")
    samples = trainer.output_dir / "samples"
    from ..features.audio import save_wav

    save_wav(samples / f"{clip.name}_converted.wav", audio, trainer.config.sampling_rate)
    save_wav(samples / f"{clip.name}_original.wav", clip.target, trainer.config.sampling_rate)
    report = {"clip": clip.name, "max_abs_difference_vs_training_model": difference,
              "mel_l1": mel_l1(audio, clip.target, trainer.config), "sample": str(samples / f"{clip.name}_converted.wav")}
    if difference > 1e-4:
        logger.warning("the reloaded adapter converts differently from the trained model (max difference %.3g)",
                       difference)
    trainer.accelerator.log({"test/mel_l1": report["mel_l1"], "test/reload_difference": difference},
                            step=trainer.global_step)
    writer = tensorboard_writer(trainer.accelerator)
    if writer is not None:
        writer.add_audio(f"test/{clip.name}", torch.from_numpy(audio)[None], trainer.global_step,
                         sample_rate=trainer.config.sampling_rate)
    logger.info("end-of-training check: the saved adapter reloads onto a fresh base and converts %s "
                "(mel L1 %.4f, max difference to the trained model %.3g)", clip.name, report["mel_l1"], difference)
    return report, reloaded


def _push(trainer: RVCTrainer) -> str:
    from huggingface_hub import HfApi

    args = trainer.args
    api = HfApi()
    repo_id = api.create_repo(args.hub_model_id or trainer.output_dir.name, exist_ok=True,
                              private=args.hub_private_repo or None).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=str(trainer.output_dir), commit_message="End of training",
                      ignore_patterns=HUB_IGNORE)
    logger.info("uploaded the adapter to https://huggingface.co/%s", repo_id)
    return repo_id


def create_hub_repo(args: TrainingConfig) -> str:
    """Create the Hub repository before training (main process) so that a bad token fails in seconds, not hours."""
    from huggingface_hub import HfApi

    return HfApi().create_repo(args.hub_model_id or Path(args.output_dir).name, exist_ok=True,
                               private=args.hub_private_repo or None).repo_id


def finish_training(trainer: RVCTrainer, result: TrainingResult, elapsed: float) -> TrainingResult:
    """Run the end-of-training sequence (module docstring) and fill `result`."""
    accelerator, args = trainer.accelerator, trainer.args
    # no barrier before the work: every process has just passed the last step's reduction, so they are in step
    if accelerator.is_main_process:
        if len(trainer.validator) and trainer.global_step % args.validation_steps != 0:
            trainer.validate_local()
        result.adapter_dir = _save_adapter(trainer, elapsed)
        result.validation = trainer.last_validation
        if args.build_index:
            result.final_check["index"] = str(_build_index(trainer))
        reloaded = None
        if not args.skip_final_validation:
            report, reloaded = reload_and_convert(trainer)
            result.final_check.update(report)
        if args.export_rvc:
            from ..checkpoints import export_rvc, load_synthesizer

            if reloaded is None:
                from peft import PeftModel

                base = load_synthesizer(args.pretrained_model_name_or_path, revision=args.revision,
                                        sample_rate=trainer.config.sampling_rate)
                reloaded = PeftModel.from_pretrained(base, str(trainer.output_dir))
            merged = reloaded.merge_and_unload()
            export_rvc(merged.to("cpu"), args.export_rvc, info=f"rvc-peft adapter {trainer.output_dir.name}, "
                                                                f"{trainer.global_step} steps")
            result.final_check["export_rvc"] = os.fspath(args.export_rvc)
            logger.info("merged RVC voice written to %s", args.export_rvc)
        if args.push_to_hub:
            result.final_check["hub_repo"] = _push(trainer)
        logger.info("adapter saved to %s", trainer.output_dir)
    trainer.end_barrier.wait()  # long timeout: see EndOfTrainingBarrier
    accelerator.end_training()
    return result
