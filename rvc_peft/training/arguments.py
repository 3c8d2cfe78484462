"""Command-line arguments of `train_accelerate.py`, named after diffusers' LoRA training scripts.

`build_parser()` is shared by the script, the `rvc-peft train` command and the tests; `parse_args(argv)` parses and
checks the combination (raising `TrainingSetupError` with the offending flags named).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .errors import TrainingSetupError

LR_SCHEDULERS = ("rvc_exponential", "constant", "cosine", "linear")
DISCRIMINATOR_MODES = ("full", "frozen", "lora")
LOSS_MODES = ("full", "mel_kl", "mel")
MIXED_PRECISION = ("no", "fp16", "bf16")
RVC_LR_DECAY = 0.999875  # RVC's ExponentialLR gamma, stepped once per epoch


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where a default says something: not for unset (None) options, on/off switches
    (store_true) or texts that already describe their default (mentioning "default")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (diffusers' names where one exists, RVC's defaults for the objective)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an RVC voice LoRA adapter with RVC's GAN objective (run it with `accelerate launch`).",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model and data")
    model.add_argument("--pretrained_model_name_or_path", required=True,
                       help="base synthesizer: an RVC G file (f0G40k.pth, G_*.pth, exported voice), an rvc-peft "
                            "model folder, or a Hugging Face hub id (org/name or org/name/file.pth)")
    model.add_argument("--revision", default=None,
                       help="Hub revision (branch, tag or commit) of a Hub base model; unset: the default branch")
    model.add_argument("--pretrained_discriminator", default=None,
                       help="RVC discriminator file (f0D40k.pth, D_*.pth) or hub reference matching the base; "
                            "without it the discriminator starts from random weights (works, but converges slower)")
    model.add_argument("--train_data_dir", "--dataset", dest="train_data_dir", required=True,
                       help="dataset folder written by `rvc-peft preprocess` / `rvc-peft import-experiment`")
    model.add_argument("--max_train_samples", type=int, default=None,
                       help="use only the first N slices (debugging); unset: all")
    model.add_argument("--output_dir", default="rvc-lora", help="where the adapter, checkpoints and logs go")
    model.add_argument("--seed", type=int, default=1234, help="seed of weights, data order and slicing (RVC's value)")

    sched = parser.add_argument_group("schedule and optimiser")
    sched.add_argument("--train_batch_size", type=int, default=4, help="batch size per process")
    sched.add_argument("--num_train_epochs", type=int, default=100,
                       help="passes over the dataset (ignored when --max_train_steps is set)")
    sched.add_argument("--max_train_steps", type=int, default=None,
                       help="total optimiser steps; overrides --num_train_epochs (unset: epochs x steps per epoch)")
    sched.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="micro-batches per optimiser step (effective batch: this x batch size x processes)")
    sched.add_argument("--learning_rate", type=float, default=1e-4, help="generator (adapter) learning rate")
    sched.add_argument("--discriminator_learning_rate", type=float, default=None,
                       help="discriminator learning rate; unset: the same as --learning_rate")
    sched.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="rvc_exponential",
                       help="rvc_exponential: RVC's ExponentialLR(gamma=--lr_decay) stepped per epoch")
    sched.add_argument("--lr_warmup_steps", type=int, default=0, help="linear warm-up steps (any scheduler)")
    sched.add_argument("--lr_decay", type=float, default=RVC_LR_DECAY, help="per-epoch gamma of rvc_exponential")
    sched.add_argument("--adam_beta1", type=float, default=0.8, help="AdamW beta1 (RVC's value)")
    sched.add_argument("--adam_beta2", type=float, default=0.99, help="AdamW beta2 (RVC's value)")
    sched.add_argument("--adam_epsilon", type=float, default=1e-9, help="AdamW epsilon (RVC's value)")
    sched.add_argument("--adam_weight_decay", type=float, default=0.01, help="AdamW weight decay (PyTorch's value)")
    sched.add_argument("--max_grad_norm", type=float, default=None,
                       help="clip gradients to this norm (RVC only measures the norm: no clipping by default)")
    sched.add_argument("--mixed_precision", choices=MIXED_PRECISION, default=None,
                       help="overrides the accelerate config (unset: the config's, else no); fp16 needs a GPU, bf16 "
                            "works on CPU and recent GPUs")
    sched.add_argument("--allow_tf32", action="store_true", help="allow TF32 matmuls on Ampere+ GPUs")
    sched.add_argument("--dataloader_num_workers", type=int, default=0,
                       help="background processes preparing batches, one CPU thread each (0: the training process "
                            "does it)")
    sched.add_argument("--num_threads", type=int, default=None,
                       help="PyTorch CPU threads per training process; unset: OMP_NUM_THREADS if set, else the "
                            "machine's cores divided by its training processes, fewer when other programs keep "
                            "cores busy")
    sched.add_argument("--bucket_by_length", action=argparse.BooleanOptionalAction, default=True,
                       help="batch slices of similar length together (RVC's bucket sampler)")
    sched.add_argument("--segment_frames", type=int, default=None,
                       help="decoder training window in frames; unset: the base config's (32 at 40k = 0.32 s); "
                            "smaller saves memory")

    lora = parser.add_argument_group("adapter")
    lora.add_argument("--rank", type=int, default=8, help="LoRA rank: the adapters' inner width (their size and capacity)")
    lora.add_argument("--lora_alpha", type=int, default=None, help="LoRA alpha (scale alpha / rank); unset: 2 x rank")
    lora.add_argument("--lora_dropout", type=float, default=0.0, help="dropout on the adapters' input")
    lora.add_argument("--lora_preset", default="all",
                      help='target preset: generator, flow, encoder, all, or a "+" combination such as generator+flow '
                           "(all: the cheapest that matched full fine-tuning in benchmarks/bench_quality.py; a "
                           "generator-only adapter reached a third of its reconstruction gain)")
    lora.add_argument("--lora_targets", default=None,
                      help="explicit target modules instead of a preset: a regex, or a comma-separated list of names")
    lora.add_argument("--train_speaker_embedding", action="store_true",
                      help="also train the speaker table emb_g (saved in the adapter through modules_to_save)")
    lora.add_argument("--discriminator_mode", choices=DISCRIMINATOR_MODES, default="full",
                      help="full: train every discriminator weight (RVC); frozen: keep it fixed; lora: its own adapter")
    lora.add_argument("--discriminator_rank", type=int, default=None,
                      help="rank of the discriminator adapter (--discriminator_mode lora); unset: --rank")
    lora.add_argument("--loss", choices=LOSS_MODES, default="full",
                      help="full: RVC's objective (mel x45 + KL + feature matching x2 + LSGAN); mel_kl: mel x45 + KL, no "
                           "discriminator (trains the prior and flow too, fast on a CPU); mel: mel L1 only")

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500, help="save a checkpoint every N steps")
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=2,
                      help="keep at most this many checkpoints (default 2: the newest and the one before; older ones "
                           "are deleted once a newer one is complete). With --discriminator_mode full each checkpoint "
                           "holds the discriminator and its AdamW state (~0.9 GB for a v2 base); raise it to keep more")
    ckpt.add_argument("--resume_from_checkpoint", default=None,
                      help='"latest" (the newest checkpoint-* in --output_dir) or a checkpoint folder')

    val = parser.add_argument_group("validation and logging")
    val.add_argument("--validation_steps", type=int, default=500, help="validate every N steps")
    val.add_argument("--num_validation_clips", type=int, default=2,
                     help="dataset slices held out of training and converted at every validation (0: none)")
    val.add_argument("--report_to", default="tensorboard",
                     help='tracker for accelerate ("tensorboard", "wandb", "all", or "none")')
    val.add_argument("--logging_dir", default="logs", help="tracker folder, relative to --output_dir")
    val.add_argument("--logging_steps", type=int, default=10, help="log losses every N steps")

    end = parser.add_argument_group("end of training")
    end.add_argument("--push_to_hub", action="store_true", help="upload adapter, card and index to the Hub")
    end.add_argument("--hub_model_id", default=None, help="Hub repository id; unset: the output folder's name")
    end.add_argument("--hub_private_repo", action="store_true", help="create the Hub repository as private")
    end.add_argument("--build_index", action="store_true", help="build the faiss retrieval index of the dataset")
    end.add_argument("--export_rvc", default=None, metavar="PATH",
                     help="also write the merged voice as an RVC WebUI/Applio .pth file at PATH")
    end.add_argument("--skip_final_validation", action="store_true",
                     help="do not reload the saved adapter onto a fresh base to convert a clip at the end")
    return parser


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Reject impossible combinations with a message naming the flags; fill derived defaults."""
    positive = ("train_batch_size", "gradient_accumulation_steps", "rank", "checkpointing_steps", "validation_steps",
                "logging_steps", "num_train_epochs")
    for name in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise TrainingSetupError(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("max_train_steps", "checkpoints_total_limit", "segment_frames", "discriminator_rank",
                 "max_train_samples", "num_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise TrainingSetupError(f"--{name} must be at least 1, got {value}")
    for name in ("learning_rate", "adam_epsilon"):
        if getattr(args, name) <= 0:
            raise TrainingSetupError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.discriminator_learning_rate is not None and args.discriminator_learning_rate <= 0:
        raise TrainingSetupError(f"--discriminator_learning_rate must be positive, got {args.discriminator_learning_rate}")
    if args.discriminator_learning_rate is None:
        args.discriminator_learning_rate = args.learning_rate
    if args.num_validation_clips < 0 or args.lr_warmup_steps < 0 or args.dataloader_num_workers < 0:
        raise TrainingSetupError("--num_validation_clips, --lr_warmup_steps and --dataloader_num_workers cannot be "
                                 "negative")
    if not 0.0 < args.lr_decay <= 1.0:
        raise TrainingSetupError(f"--lr_decay must be in (0, 1], got {args.lr_decay}")
    if args.lora_alpha is None:
        args.lora_alpha = 2 * args.rank
    if args.discriminator_rank is None:
        args.discriminator_rank = args.rank
    if args.loss != "full" and args.discriminator_mode != "full":
        raise TrainingSetupError(f"--discriminator_mode only applies to --loss full (--loss {args.loss} uses no "
                                 "discriminator)")
    if args.lora_targets is None:
        from ..tuners.lora.config import is_target_preset

        if not is_target_preset(args.lora_preset):
            from ..tuners import TARGET_PRESETS

            raise TrainingSetupError(f"--lora_preset {args.lora_preset!r} is not a preset; choose from "
                                     f"{', '.join(TARGET_PRESETS)} or combine them with '+'")
    if args.report_to in ("none", "None", ""):
        args.report_to = None
    return args


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parse and check `argv` (default: `sys.argv[1:]`); `prog` names the command in usage and errors."""
    return check_args(build_parser(prog).parse_args(argv))
