"""`TrainingConfig`: every setting of a training run, typed, with RVC's defaults (like transformers' TrainingArguments).

Filled from the command line by `rvc_peft.training.parse_args` (the `train_accelerate.py` script, `rvc-peft train` and
`python -m rvc_peft.train` share it), or built directly from Python:

    from rvc_peft.training import TrainingConfig, main
    main(TrainingConfig(pretrained_model_name_or_path="f0G40k.pth", train_data_dir="dataset", max_train_steps=200))

Construction checks the combination (raising `TrainingSetupError` naming the offending option) and resolves the
derived defaults (`lora_alpha` = 2 x rank, the discriminator's learning rate and rank). The trainer never changes it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import TrainingSetupError

LR_SCHEDULERS = ("rvc_exponential", "constant", "cosine", "linear")
DISCRIMINATOR_MODES = ("full", "frozen", "lora")
LOSS_MODES = ("full", "mel_kl", "mel")
MIXED_PRECISION = ("no", "fp16", "bf16")
RVC_LR_DECAY = 0.999875  # RVC's ExponentialLR gamma, stepped once per epoch


@dataclass
class TrainingConfig:
    """The settings of one training run; each field is the command-line option of the same name (see `--help`)."""

    # model and data
    pretrained_model_name_or_path: str
    train_data_dir: str
    revision: str | None = None
    pretrained_discriminator: str | None = None
    max_train_samples: int | None = None
    output_dir: str = "rvc-lora"
    seed: int = 1234
    # schedule and optimiser
    train_batch_size: int = 4
    num_train_epochs: int = 100
    max_train_steps: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    discriminator_learning_rate: float | None = None
    lr_scheduler: str = "rvc_exponential"
    lr_warmup_steps: int = 0
    lr_decay: float = RVC_LR_DECAY
    adam_beta1: float = 0.8
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-9
    adam_weight_decay: float = 0.01
    max_grad_norm: float | None = None
    mixed_precision: str | None = None
    allow_tf32: bool = False
    dataloader_num_workers: int = 0
    num_threads: int | None = None
    bucket_by_length: bool = True
    segment_frames: int | None = None
    # adapter
    rank: int = 8
    lora_alpha: int | None = None
    lora_dropout: float = 0.0
    lora_preset: str = "all"
    lora_targets: str | None = None
    train_speaker_embedding: bool = False
    discriminator_mode: str = "full"
    discriminator_rank: int | None = None
    loss: str = "full"
    # checkpoints
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    # validation and logging
    validation_steps: int = 500
    num_validation_clips: int = 2
    report_to: str | None = "tensorboard"
    logging_dir: str = "logs"
    logging_steps: int = 10
    # end of training
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private_repo: bool = False
    build_index: bool = False
    export_rvc: str | None = None
    skip_final_validation: bool = False

    def __post_init__(self) -> None:
        for name in ("train_batch_size", "gradient_accumulation_steps", "rank", "checkpointing_steps",
                     "validation_steps", "logging_steps", "num_train_epochs", "max_train_steps",
                     "checkpoints_total_limit", "segment_frames", "discriminator_rank", "max_train_samples",
                     "num_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingSetupError(f"--{name} must be at least 1, got {value}")
        for name in ("learning_rate", "adam_epsilon", "discriminator_learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise TrainingSetupError(f"--{name} must be positive, got {value}")
        if self.num_validation_clips < 0 or self.lr_warmup_steps < 0 or self.dataloader_num_workers < 0:
            raise TrainingSetupError("--num_validation_clips, --lr_warmup_steps and --dataloader_num_workers cannot be "
                                     "negative")
        if not 0.0 < self.lr_decay <= 1.0:
            raise TrainingSetupError(f"--lr_decay must be in (0, 1], got {self.lr_decay}")
        for name, choices in (("lr_scheduler", LR_SCHEDULERS), ("discriminator_mode", DISCRIMINATOR_MODES),
                              ("loss", LOSS_MODES), ("mixed_precision", (None, *MIXED_PRECISION))):
            if getattr(self, name) not in choices:
                shown = ", ".join(str(choice) for choice in choices if choice is not None)
                raise TrainingSetupError(f"--{name} {getattr(self, name)!r} is not one of {shown}")
        if self.loss != "full" and self.discriminator_mode != "full":
            raise TrainingSetupError(f"--discriminator_mode only applies to --loss full (--loss {self.loss} uses no "
                                     "discriminator)")
        if self.lora_targets is None:
            from ..tuners.lora.presets import TARGET_PRESETS, is_target_preset

            if not is_target_preset(self.lora_preset):
                raise TrainingSetupError(f"--lora_preset {self.lora_preset!r} is not a preset; choose from "
                                         f"{', '.join(TARGET_PRESETS)} or combine them with '+'")
        # derived defaults, resolved once here (never changed afterwards)
        if self.discriminator_learning_rate is None:
            self.discriminator_learning_rate = self.learning_rate
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.rank
        if self.discriminator_rank is None:
            self.discriminator_rank = self.rank
        if self.report_to in ("none", "None", ""):
            self.report_to = None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace | TrainingConfig) -> TrainingConfig:
        """The config of parsed command-line options (extra attributes, e.g. the CLI's own, are ignored)."""
        if isinstance(args, TrainingConfig):
            return args
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in vars(args).items() if name in names})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each optional field's default (what the command line uses when an option is not given)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for logs, trackers and the adapter's training summary)."""
        return dataclasses.asdict(self)
