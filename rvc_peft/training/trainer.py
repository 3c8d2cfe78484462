"""The training loop behind `train_accelerate.py`: RVC's GAN objective on a LoRA adapter, driven by Accelerate.

One optimiser update (RVC's `train_and_evaluate` step, per micro-batch under gradient accumulation):

1. generator training forward -> generated slice ŷ, slice starts, posterior/prior statistics;
2. targets in fp32: mel of the spectrogram slice, mel of ŷ, the matching waveform slice;
3. discriminator step (trainable D only): LSGAN loss on (y, ŷ.detach()), backward, clip/measure, AdamW step;
4. generator step: the (just updated) discriminator on (y, ŷ) with its weights frozen — called outside DDP so no
   gradient reaches D and DDP's reducer is not involved — then mel ×45 + KL + feature matching ×2 + LSGAN, backward,
   AdamW step. `--loss mel` keeps only the mel term and builds no discriminator; `--loss mel_kl` keeps mel + KL.

Both losses go through `accelerator.backward`, so under fp16 one GradScaler scales both, each optimiser's step is
skipped on overflow and the scale is updated after each step. Schedulers step once per update.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from torch import nn

from ..features.spectrogram import mel_spectrogram, spec_to_mel
from ..models.synthesizer import slice_segments
from ..runtime import single_thread_worker
from ..utils.log import configure_logging, is_configured
from .checkpointing import CheckpointManager, read_training_state, resolve_checkpoint
from .config import TrainingConfig
from .data import LengthBucketBatchSampler, RVCTrainingDataset, collate_batch
from .errors import TrainingSetupError
from .finalize import EndOfTrainingBarrier, create_hub_repo, finish_training
from .guards import (
    StopRequest,
    adapter_digest,
    build_accelerator,
    check_step_is_finite,
    is_out_of_memory,
    out_of_memory_error,
)
from .losses import C_KL, discriminator_loss, feature_loss, generator_loss, kl_loss, mel_loss
from .optim import LearningRateSchedule, build_optimizer, build_scheduler
from .setup import (
    build_discriminator,
    build_generator,
    check_dataset_fits,
    describe_trainable,
    load_base_generator,
    load_training_dataset,
    unused_when_mel_only,
)
from .validation import Validator, log_validation, make_clip, select_validation_rows

logger = get_logger(__name__)

PROJECT_NAME = "rvc-peft"
# settings a resumed run must share with the checkpoint (anything else only changes the data order)
RESUME_MUST_MATCH = ("pretrained_model_name_or_path", "rank", "lora_alpha", "lora_preset", "lora_targets",
                     "train_speaker_embedding", "discriminator_mode", "discriminator_rank", "loss")
RESUME_SHOULD_MATCH = ("seed", "train_batch_size", "gradient_accumulation_steps", "num_processes",
                       "bucket_by_length", "segment_frames", "num_validation_clips")
# metrics measured once per update (on the micro-batch that steps the optimisers), not averaged over micro-batches
PER_UPDATE_PREFIX = "grad_norm"


@dataclass
class TrainingResult:
    """What `main` did: steps run, where the adapter went, the last metrics (averaged over processes)."""

    output_dir: Path
    global_step: int
    interrupted: bool = False
    adapter_dir: Path | None = None
    losses: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    final_check: dict[str, Any] = field(default_factory=dict)
    adapter_digest: str | None = None


class RVCTrainer:
    """Holds the prepared models/optimisers and runs the loop: `RVCTrainer(args).train()`.

    `__init__` does all the checking and loading (dataset, base, discriminator, adapter, data order, optimisers,
    `accelerator.prepare`), so a bad setup fails before any training starts.
    """

    def __init__(self, args: TrainingConfig | argparse.Namespace, discriminator: nn.Module | None = None) -> None:
        args = TrainingConfig.from_namespace(args)  # a Namespace from argparse is checked the same way
        self.args = args
        self.accelerator = accelerator = build_accelerator(args)
        self.output_dir = Path(args.output_dir)
        if args.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
        from accelerate.utils import set_seed

        set_seed(args.seed)

        self.dataset, self.dataset_info = load_training_dataset(args)
        base = load_base_generator(args, self.dataset_info.sample_rate)
        check_dataset_fits(self.dataset_info, base, args.pretrained_model_name_or_path, args.train_data_dir)
        self.config = base.config
        # the decoder's training window: passed to every training forward (the model's config is never changed)
        self.segment_frames = args.segment_frames or base.segment_frames

        self.discriminator = build_discriminator(args, base, discriminator)  # before the adapter: fails faster
        self.generator = build_generator(base, args)
        self.discriminator_source = ("the caller's module" if discriminator is not None
                                     else args.pretrained_discriminator or "random init")
        if args.loss == "mel" and accelerator.is_main_process and unused_when_mel_only(self.generator):
            logger.warning("--loss mel: the adapters on the text encoder/flow get no gradient (only the decoder path "
                           "enters the mel loss); use --lora_preset generator or --loss full")
        self._build_data()
        if accelerator.is_main_process:  # only now: a run refused above leaves nothing behind
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._build_optimization()
        self.end_barrier = EndOfTrainingBarrier(accelerator)  # every process, now: a network problem shows up early
        self.stop = StopRequest()
        self.global_step = 0
        self.last_losses: dict[str, float] = {}
        self.last_validation: dict[str, float] = {}
        self._last_mels: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- setup -------------------------------------------------------------------------------------------------
    def _build_data(self) -> None:
        args, accelerator = self.args, self.accelerator
        frames = RVCTrainingDataset(self.dataset, self.config).all_frames
        held_out = select_validation_rows(len(self.dataset), args.num_validation_clips, args.seed)
        candidates = sorted(set(range(len(self.dataset))) - set(held_out))
        usable = [i for i in candidates if frames[i] >= self.segment_frames]
        if len(usable) < len(candidates):
            logger.warning("%d of %d slices are shorter than the %d-frame training window and are skipped",
                           len(candidates) - len(usable), len(candidates), self.segment_frames)
        if not usable:
            raise TrainingSetupError(
                f"--train_data_dir {args.train_data_dir}: no slice is long enough to train on ({len(self.dataset)} "
                f"slices, {len(held_out)} held out for validation, the window is {self.segment_frames} frames); "
                "add audio, lower --num_validation_clips or --segment_frames")
        self.train_dataset = RVCTrainingDataset(self.dataset, self.config, usable)
        self.validator = Validator([make_clip(i, self.train_dataset.dataset[i], self.config) for i in held_out],
                                   self.config)
        self.sampler = LengthBucketBatchSampler(
            self.train_dataset.frames, args.train_batch_size, num_replicas=accelerator.num_processes,
            rank=accelerator.process_index, seed=args.seed, bucket_width=100 if args.bucket_by_length else None,
            gradient_accumulation_steps=args.gradient_accumulation_steps)
        # its own generator: a DataLoader draws a worker base seed from the global RNG whenever an iterator starts,
        # which would shift the training random stream on resume (the iterator starts mid-epoch there)
        self.dataloader = torch.utils.data.DataLoader(
            self.train_dataset, batch_sampler=self.sampler, collate_fn=collate_batch,
            num_workers=args.dataloader_num_workers, pin_memory=accelerator.device.type == "cuda",
            generator=torch.Generator().manual_seed(args.seed),
            worker_init_fn=single_thread_worker if args.dataloader_num_workers else None)
        self.updates_per_epoch = len(self.sampler) // args.gradient_accumulation_steps
        self.max_train_steps = args.max_train_steps or args.num_train_epochs * self.updates_per_epoch
        self.num_epochs = math.ceil(self.max_train_steps / self.updates_per_epoch)

    def _build_optimization(self) -> None:
        args, accelerator = self.args, self.accelerator
        betas = (args.adam_beta1, args.adam_beta2)
        schedule = LearningRateSchedule(args.lr_scheduler, total_steps=self.max_train_steps,
                                        steps_per_epoch=self.updates_per_epoch, warmup_steps=args.lr_warmup_steps,
                                        gamma=args.lr_decay)
        optimizer_g = build_optimizer(self.generator.parameters(), lr=args.learning_rate, betas=betas,
                                      eps=args.adam_epsilon, weight_decay=args.adam_weight_decay)
        self.scheduler_g = build_scheduler(optimizer_g, schedule)
        self.d_trainable = self.discriminator is not None and any(
            p.requires_grad for p in self.discriminator.parameters())
        if self.d_trainable:
            optimizer_d = build_optimizer(self.discriminator.parameters(), lr=args.discriminator_learning_rate,
                                          betas=betas, eps=args.adam_epsilon, weight_decay=args.adam_weight_decay)
            self.scheduler_d = build_scheduler(optimizer_d, schedule)
            self.generator_ddp, self.optimizer_g, self.discriminator_ddp, self.optimizer_d = accelerator.prepare(
                self.generator, optimizer_g, self.discriminator, optimizer_d)
            self.ddp_models = (self.generator_ddp, self.discriminator_ddp)
        else:
            self.generator_ddp, self.optimizer_g = accelerator.prepare(self.generator, optimizer_g)
            self.optimizer_d = self.scheduler_d = None
            if self.discriminator is not None:
                self.discriminator.to(accelerator.device)
            self.discriminator_ddp = self.discriminator
            self.ddp_models = (self.generator_ddp,)
        g_named = [(n, p) for n, p in self.generator.named_parameters() if p.requires_grad]
        d_named = [(n, p) for n, p in self.discriminator.named_parameters() if p.requires_grad] if self.d_trainable else []
        self.g_trainable_params = [p for _, p in g_named]
        self.d_trainable_params = [p for _, p in d_named]
        # what the NaN/inf guard inspects after every update (names for its message)
        self.trainable_tensors = ([(f"generator.{n}", p) for n, p in g_named]
                                  + [(f"discriminator.{n}", p) for n, p in d_named])
        # checkpoints in our pickle-free format (not accelerate's save_state, whose files are unpickled on resume)
        models = {"generator": self.generator}
        optimizers, schedulers = {"generator": self.optimizer_g}, {"generator": self.scheduler_g}
        if self.discriminator is not None:
            models["discriminator"] = self.discriminator
        if self.optimizer_d is not None:
            optimizers["discriminator"], schedulers["discriminator"] = self.optimizer_d, self.scheduler_d
        self.checkpoints = CheckpointManager(accelerator, self.output_dir, models, args.checkpoints_total_limit,
                                             optimizers=optimizers, schedulers=schedulers)

    def settings(self) -> dict[str, Any]:
        """The run's identity, stored in checkpoints and checked on resume."""
        args = self.args
        values = {name: getattr(args, name, None) for name in RESUME_MUST_MATCH + RESUME_SHOULD_MATCH}
        values["num_processes"] = self.accelerator.num_processes
        values["segment_frames"] = self.segment_frames
        return values

    # --- one update --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _discriminator_frozen(self) -> Iterator[None]:
        """D's weights take no gradient while the generator's loss runs through it (so G's backward leaves D alone)."""
        for p in self.d_trainable_params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in self.d_trainable_params:
                p.requires_grad_(True)

    def _step_optimizer(self, optimizer: Any, params: list[nn.Parameter]) -> torch.Tensor | None:
        """Unscale (fp16), measure/clip the gradient norm, step, zero. Returns the norm of the accumulated gradient
        on the micro-batch that completes an update, None on the others (they only accumulate)."""
        accelerator = self.accelerator
        norm = None
        if accelerator.sync_gradients:
            accelerator.unscale_gradients(optimizer)
            max_norm = self.args.max_grad_norm if self.args.max_grad_norm is not None else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One micro-batch through RVC's D and G steps; returns the detached loss terms (fp32 scalars)."""
        accelerator, config = self.accelerator, self.config
        hop, seg = config.hop_length, self.segment_frames
        pitch, pitchf = batch.get("pitch"), batch.get("pitchf")
        with accelerator.accumulate(*self.ddp_models):
            with accelerator.autocast():
                y_hat, ids_slice, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = self.generator_ddp(
                    batch["phone"], batch["phone_lengths"], pitch, pitchf, batch["spec"], batch["spec_lengths"],
                    batch["speaker_id"], segment_frames=seg)
            with torch.autocast(device_type=accelerator.device.type, enabled=False):
                spec_slice = slice_segments(batch["spec"], ids_slice, seg).float()
                y_mel = spec_to_mel(spec_slice, config.filter_length, config.n_mel_channels, config.sampling_rate,
                                    config.mel_fmin, config.mel_fmax)
                y_hat_mel = mel_spectrogram(y_hat.float().squeeze(1), config.filter_length, config.n_mel_channels,
                                            config.sampling_rate, hop, config.win_length, config.mel_fmin,
                                            config.mel_fmax)
            wave = slice_segments(batch["wave"], ids_slice * hop, seg * hop)
            out: dict[str, torch.Tensor] = {}
            loss_mel = mel_loss(y_mel, y_hat_mel)
            if self.discriminator_ddp is None:  # --loss mel / mel_kl: no discriminator
                loss_g = loss_mel
                if self.args.loss == "mel_kl":
                    loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * C_KL
                    loss_g = loss_g + loss_kl
                    out["loss/g/kl"] = loss_kl.detach()
            else:
                if self.d_trainable:
                    with accelerator.autocast():
                        d_real, d_fake, _, _ = self.discriminator_ddp(wave, y_hat.detach())
                    loss_d, real_terms, fake_terms = discriminator_loss(d_real, d_fake)
                    accelerator.backward(loss_d)
                    norm_d = self._step_optimizer(self.optimizer_d, self.d_trainable_params)
                    if norm_d is not None:
                        out["grad_norm_d"] = norm_d
                with self._discriminator_frozen(), accelerator.autocast():
                    d_real, d_fake, fmap_real, fmap_fake = self.discriminator(wave, y_hat)
                if not self.d_trainable:  # frozen D: report its loss from this forward, at no extra cost
                    loss_d, real_terms, fake_terms = discriminator_loss(d_real, [d.detach() for d in d_fake])
                loss_kl = kl_loss(z_p, logs_q, m_p, logs_p, z_mask) * C_KL
                loss_fm = feature_loss(fmap_real, fmap_fake)
                loss_gen, gen_terms = generator_loss(d_fake)
                loss_g = loss_gen + loss_fm + loss_mel + loss_kl
                out.update({"loss/d/total": loss_d.detach(), "loss/g/kl": loss_kl.detach(),
                            "loss/g/fm": loss_fm.detach(), "loss/g/gen": loss_gen.detach()})
                for i, (r, f, g) in enumerate(zip(real_terms, fake_terms, gen_terms)):
                    out[f"loss/d_r/{i}"], out[f"loss/d_g/{i}"], out[f"loss/g/{i}"] = r, f, g
            accelerator.backward(loss_g)
            norm_g = self._step_optimizer(self.optimizer_g, self.g_trainable_params)
            if norm_g is not None:
                out["grad_norm_g"] = norm_g
        out["loss/g/total"] = loss_g.detach()
        out["loss/g/mel"] = loss_mel.detach()
        if accelerator.is_main_process:
            self._last_mels = (y_mel[0].detach(), y_hat_mel[0].detach())
        return {k: v.float() for k, v in out.items()}

    # --- the loop ----------------------------------------------------------------------------------------------
    def _reduce(self, sums: dict[str, torch.Tensor], count: int) -> tuple[dict[str, float], bool]:
        """Average the accumulated terms over micro-batches and processes; also agree on a stop request.

        Losses are summed over the `count` micro-batches of the update; gradient norms exist only on its last one.
        """
        accelerator = self.accelerator
        names = sorted(sums)
        vector = torch.stack([sums[n].to(accelerator.device) / (1 if n.startswith(PER_UPDATE_PREFIX) else count)
                              for n in names]
                             + [torch.tensor(float(self.stop.requested), device=accelerator.device)])
        if accelerator.num_processes > 1:
            vector = accelerator.reduce(vector, reduction="sum")
            vector[:-1] /= accelerator.num_processes
        values = vector.cpu().tolist()
        return dict(zip(names, values[:-1])), values[-1] > 0

    def _check_finite(self, losses: dict[str, float]) -> None:
        # Every rank reaches the same verdict: the losses and norms were just reduced across processes, and DDP
        # keeps the trainable weights identical on all of them.
        check_step_is_finite(losses, self.trainable_tensors, step=self.global_step, output_dir=self.output_dir,
                             scaler_active=self.accelerator.scaler is not None)

    def resume(self) -> int:
        """Load `--resume_from_checkpoint` if given; returns the step to continue from."""
        args = self.args
        checkpoint = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
        if args.resume_from_checkpoint is not None and checkpoint is None:
            logger.info("no checkpoint in %s yet: starting a new run", args.output_dir)
            return 0
        if checkpoint is None:
            return 0
        saved = read_training_state(checkpoint).get("settings", {})
        ours = self.settings()
        for key in RESUME_MUST_MATCH:
            if key in saved and saved[key] != ours[key]:
                raise TrainingSetupError(f"--resume_from_checkpoint {checkpoint}: it was made with --{key} "
                                         f"{saved[key]!r}, this run has {ours[key]!r}")
        changed = [k for k in RESUME_SHOULD_MATCH if k in saved and saved[k] != ours[k]]
        if changed:
            logger.warning("resuming with other %s than the checkpoint: training continues, but the data order "
                           "differs from an uninterrupted run", ", ".join(changed))
        state = self.checkpoints.load(checkpoint)
        logger.info("resumed from %s (step %d)", checkpoint, state["step"])
        return int(state["step"])

    def save_checkpoint(self) -> Path:
        state = {"epoch": self.global_step // self.updates_per_epoch, "settings": self.settings(),
                 "losses": self.last_losses, "validation": self.last_validation}
        path = self.checkpoints.save(self.global_step, state)
        logger.info("saved %s", path)
        return path

    def validate(self) -> dict[str, float]:
        """All processes call this; the main one converts and logs (see `validate_local`), the others wait."""
        metrics = self.validate_local() if self.accelerator.is_main_process else {}
        self.accelerator.wait_for_everyone()
        return metrics

    def validate_local(self) -> dict[str, float]:
        """Convert the held-out clips with the live adapter, log metrics, audio and mel images (this process)."""
        metrics = log_validation(self.accelerator, self.generator, self.validator,
                                 self.global_step, self._last_mels)
        if len(self.validator):
            self.last_validation = metrics
        return metrics

    def train(self) -> TrainingResult:
        """Run (or continue) training to --max_train_steps, then write the adapter and the end-of-training extras."""
        from tqdm.auto import tqdm

        args, accelerator = self.args, self.accelerator
        trainable, total = describe_trainable(self.generator)
        self.global_step = self.resume()
        if args.push_to_hub and accelerator.is_main_process:
            create_hub_repo(args)  # fail fast on a bad token or name, not after hours of training
        if accelerator.is_main_process:
            tracker_config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
            accelerator.init_trackers(PROJECT_NAME, config=tracker_config)
        logger.info("training %s trainable of %s generator parameters on %d slices; %d process(es) x batch %d x "
                    "accumulation %d; %d steps (%d per epoch)", f"{trainable:,}", f"{total:,}",
                    len(self.train_dataset), accelerator.num_processes, args.train_batch_size,
                    args.gradient_accumulation_steps, self.max_train_steps, self.updates_per_epoch)
        progress = tqdm(total=self.max_train_steps, initial=self.global_step, desc="steps",
                        disable=not accelerator.is_local_main_process)
        interrupted = False
        started = time.perf_counter()
        first_epoch = self.global_step // self.updates_per_epoch
        skip = (self.global_step % self.updates_per_epoch) * args.gradient_accumulation_steps
        with self.stop:
            for epoch in range(first_epoch, self.num_epochs):
                if self.global_step >= self.max_train_steps:
                    break
                self.sampler.set_epoch(epoch, skip_batches=skip if epoch == first_epoch else 0)
                sums: dict[str, torch.Tensor] = {}
                count = 0
                for batch in self.dataloader:
                    batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
                    values = self._guarded_step(batch)
                    for key, value in values.items():
                        sums[key] = sums.get(key, 0) + value
                    count += 1
                    if not accelerator.sync_gradients:
                        continue
                    self.global_step += 1
                    self._step_schedulers()
                    losses, stop = self._reduce(sums, count)
                    sums, count = {}, 0
                    self._check_finite(losses)
                    losses["learning_rate"] = self.scheduler_g.get_last_lr()[0]
                    if self.scheduler_d is not None:
                        losses["learning_rate/d"] = self.scheduler_d.get_last_lr()[0]
                    self.last_losses = losses
                    progress.update(1)
                    progress.set_postfix(loss_g=f"{losses['loss/g/total']:.3f}", mel=f"{losses['loss/g/mel']:.3f}",
                                         lr=f"{losses['learning_rate']:.2e}")
                    if self.global_step % args.logging_steps == 0 or self.global_step == self.max_train_steps:
                        accelerator.log(losses, step=self.global_step)
                    # A stop request saves before anything else and skips this step's validation: under accelerate
                    # launch the workers are SIGKILLed 30 s after the signal (see StopRequest). On the last step
                    # it just lets the run finish.
                    stopping = stop and self.global_step < self.max_train_steps
                    if stopping or self.global_step % args.checkpointing_steps == 0:
                        self.save_checkpoint()
                    if stopping:
                        interrupted = True
                        break
                    if self.global_step % args.validation_steps == 0:
                        self.validate()
                    if self.global_step >= self.max_train_steps:
                        break
                if interrupted:
                    break
        progress.close()
        elapsed = time.perf_counter() - started
        digest = adapter_digest(self.generator)
        logger.info("process %d: adapter digest %s after %d steps", accelerator.process_index, digest,
                    self.global_step, main_process_only=False)
        result = TrainingResult(self.output_dir, self.global_step, interrupted=interrupted, losses=self.last_losses,
                                validation=self.last_validation, adapter_digest=digest)
        if interrupted:
            logger.warning("stopped at step %d; continue with --resume_from_checkpoint latest", self.global_step)
            accelerator.end_training()
            return result
        return finish_training(self, result, elapsed)

    def _step_schedulers(self) -> None:
        # The schedule is a function of the update count, so it advances even when fp16's scaler skipped the
        # optimiser step (PyTorch then warns about the call order; that is intended here).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler_g.step()
            if self.scheduler_d is not None:
                self.scheduler_d.step()

    def _guarded_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        try:
            return self.train_step(batch)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            raise out_of_memory_error(self.args, step=self.global_step + 1, segment_frames=self.segment_frames,
                                      mixed_precision=self.accelerator.mixed_precision) from err


# Warnings the libraries under the loop raise on every run although nothing is wrong, each matched by category, the
# start of its exact text and the module that warns; every other warning still shows.
KNOWN_HARMLESS_WARNINGS = (
    # DDP, once per process, when a kernel returns a gradient whose strides differ from the parameter's only along
    # size-1 dimensions (RVC's (k, 1) and 1x1 conv kernels, weight_norm's (C, 1, 1) magnitudes): same memory order,
    # DDP copies it into its bucket as usual
    (UserWarning, r"Grad strides do not match bucket view strides", r"torch\."),
)


def ignore_known_harmless_warnings() -> None:
    """Install `KNOWN_HARMLESS_WARNINGS` as ignore filters (use inside `warnings.catch_warnings()`)."""
    for category, message, module in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def main(args: TrainingConfig | argparse.Namespace, *, discriminator: nn.Module | None = None) -> TrainingResult:
    """Train an adapter as `args` (a `TrainingConfig`, or parsed options) say; `discriminator` optionally replaces
    loading one."""
    if not is_configured():  # a program of its own (python -m rvc_peft.train): our lines only, with timestamps
        configure_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings():  # the filters last for this run only
        ignore_known_harmless_warnings()
        trainer = RVCTrainer(args, discriminator=discriminator)
        return trainer.train()

