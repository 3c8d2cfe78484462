"""Command-line options of training, named after diffusers' LoRA training scripts, filling a `TrainingConfig`.

`build_parser()` is shared by `train_accelerate.py`, `rvc-peft train`, `python -m rvc_peft.train` and the tests. Every
option takes the diffusers spelling (`--learning_rate`) and the kebab-case one (`--learning-rate`); defaults come from
`TrainingConfig`. `parse_args(argv)` parses and returns the checked `TrainingConfig` (raising `TrainingSetupError` with
the offending option named).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .config import DISCRIMINATOR_MODES, LOSS_MODES, LR_SCHEDULERS, MIXED_PRECISION, RVC_LR_DECAY, TrainingConfig

__all__ = ["DISCRIMINATOR_MODES", "LOSS_MODES", "LR_SCHEDULERS", "MIXED_PRECISION", "RVC_LR_DECAY", "build_parser",
           "check_args", "parse_args"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where a default says something: not for unset (None) options, on/off switches
    (store_true) or texts that already describe their default (mentioning "default")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _add(group: Any, *names: str, **kwargs: Any) -> argparse.Action:
    """`group.add_argument` with each `--snake_case` option also spelled `--kebab-case`."""
    spellings: list[str] = []
    for name in names:
        spellings.append(name)
        kebab = name.replace("_", "-")
        if name.startswith("--") and kebab != name:
            spellings.append(kebab)
    return group.add_argument(*spellings, **kwargs)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (diffusers' names where one exists, RVC's defaults for the objective)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an RVC voice LoRA adapter with RVC's GAN objective (run it with `accelerate launch`).",
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model and data")
    _add(model, "--pretrained_model_name_or_path", required=True,
                       help="base synthesizer: an RVC G file (f0G40k.pth, G_*.pth, exported voice), an rvc-peft "
                            "model folder, or a Hugging Face hub id (org/name or org/name/file.pth)")
    _add(model, "--revision",
                       help="Hub revision (branch, tag or commit) of a Hub base model; unset: the default branch")
    _add(model, "--pretrained_discriminator",
                       help="RVC discriminator file (f0D40k.pth, D_*.pth) or hub reference matching the base; "
                            "without it the discriminator starts from random weights (works, but converges slower)")
    _add(model, "--train_data_dir", "--dataset", dest="train_data_dir", required=True,
                       help="dataset folder written by `rvc-peft preprocess` / `rvc-peft import-experiment`")
    _add(model, "--max_train_samples", type=int,
                       help="use only the first N slices (debugging); unset: all")
    _add(model, "--output_dir", help="where the adapter, checkpoints and logs go")
    _add(model, "--seed", type=int, help="seed of weights, data order and slicing (RVC's value)")

    sched = parser.add_argument_group("schedule and optimiser")
    _add(sched, "--train_batch_size", type=int, help="batch size per process")
    _add(sched, "--num_train_epochs", type=int,
                       help="passes over the dataset (ignored when --max_train_steps is set)")
    _add(sched, "--max_train_steps", type=int,
                       help="total optimiser steps; overrides --num_train_epochs (unset: epochs x steps per epoch)")
    _add(sched, "--gradient_accumulation_steps", type=int,
                       help="micro-batches per optimiser step (effective batch: this x batch size x processes)")
    _add(sched, "--learning_rate", type=float, help="generator (adapter) learning rate")
    _add(sched, "--discriminator_learning_rate", type=float,
                       help="discriminator learning rate; unset: the same as --learning_rate")
    _add(sched, "--lr_scheduler", choices=LR_SCHEDULERS,
                       help="rvc_exponential: RVC's ExponentialLR(gamma=--lr_decay) stepped per epoch")
    _add(sched, "--lr_warmup_steps", type=int, help="linear warm-up steps (any scheduler)")
    _add(sched, "--lr_decay", type=float, help="per-epoch gamma of rvc_exponential")
    _add(sched, "--adam_beta1", type=float, help="AdamW beta1 (RVC's value)")
    _add(sched, "--adam_beta2", type=float, help="AdamW beta2 (RVC's value)")
    _add(sched, "--adam_epsilon", type=float, help="AdamW epsilon (RVC's value)")
    _add(sched, "--adam_weight_decay", type=float, help="AdamW weight decay (PyTorch's value)")
    _add(sched, "--max_grad_norm", type=float,
                       help="clip gradients to this norm (RVC only measures the norm: no clipping by default)")
    _add(sched, "--mixed_precision", choices=MIXED_PRECISION,
                       help="overrides the accelerate config (unset: the config's, else no); fp16 needs a GPU, bf16 "
                            "works on CPU and recent GPUs")
    _add(sched, "--allow_tf32", action="store_true", help="allow TF32 matmuls on Ampere+ GPUs")
    _add(sched, "--dataloader_num_workers", type=int,
                       help="background processes preparing batches, one CPU thread each (0: the training process "
                            "does it)")
    _add(sched, "--num_threads", type=int,
                       help="PyTorch CPU threads per training process; unset: OMP_NUM_THREADS if set, else the "
                            "machine's cores divided by its training processes, fewer when other programs keep "
                            "cores busy")
    _add(sched, "--bucket_by_length", action=argparse.BooleanOptionalAction,
                       help="batch slices of similar length together (RVC's bucket sampler)")
    _add(sched, "--segment_frames", type=int,
                       help="decoder training window in frames; unset: the base config's (32 at 40k = 0.32 s); "
                            "smaller saves memory")

    lora = parser.add_argument_group("adapter")
    _add(lora, "--rank", type=int, help="LoRA rank: the adapters' inner width (their size and capacity)")
    _add(lora, "--lora_alpha", type=int, help="LoRA alpha (scale alpha / rank); unset: 2 x rank")
    _add(lora, "--lora_dropout", type=float, help="dropout on the adapters' input")
    _add(lora, "--lora_preset",
                      help='target preset: generator, flow, encoder, all, or a "+" combination such as generator+flow '
                           "(all: the cheapest that matched full fine-tuning in benchmarks/bench_quality.py; a "
                           "generator-only adapter reached a third of its reconstruction gain)")
    _add(lora, "--lora_targets",
                      help="explicit target modules instead of a preset: a regex, or a comma-separated list of names")
    _add(lora, "--train_speaker_embedding", action="store_true",
                      help="also train the speaker table emb_g (saved in the adapter through modules_to_save)")
    _add(lora, "--discriminator_mode", choices=DISCRIMINATOR_MODES,
                      help="full: train every discriminator weight (RVC); frozen: keep it fixed; lora: its own adapter")
    _add(lora, "--discriminator_rank", type=int,
                      help="rank of the discriminator adapter (--discriminator_mode lora); unset: --rank")
    _add(lora, "--loss", choices=LOSS_MODES,
                      help="full: RVC's objective (mel x45 + KL + feature matching x2 + LSGAN); mel_kl: mel x45 + KL, no "
                           "discriminator (trains the prior and flow too, fast on a CPU); mel: mel L1 only")

    ckpt = parser.add_argument_group("checkpoints")
    _add(ckpt, "--checkpointing_steps", type=int, help="save a checkpoint every N steps")
    _add(ckpt, "--checkpoints_total_limit", type=int,
                      help="keep at most this many checkpoints (default 2: the newest and the one before; older ones "
                           "are deleted once a newer one is complete). With --discriminator_mode full each checkpoint "
                           "holds the discriminator and its AdamW state (~0.9 GB for a v2 base); raise it to keep more")
    _add(ckpt, "--resume_from_checkpoint",
                      help='"latest" (the newest checkpoint-* in --output_dir) or a checkpoint folder')

    val = parser.add_argument_group("validation and logging")
    _add(val, "--validation_steps", type=int, help="validate every N steps")
    _add(val, "--num_validation_clips", type=int,
                     help="dataset slices held out of training and converted at every validation (0: none)")
    _add(val, "--report_to",
                     help='tracker for accelerate ("tensorboard", "wandb", "all", or "none")')
    _add(val, "--logging_dir", help="tracker folder, relative to --output_dir")
    _add(val, "--logging_steps", type=int, help="log losses every N steps")

    end = parser.add_argument_group("end of training")
    _add(end, "--push_to_hub", action="store_true", help="upload adapter, card and index to the Hub")
    _add(end, "--hub_model_id", help="Hub repository id; unset: the output folder's name")
    _add(end, "--hub_private_repo", action="store_true", help="create the Hub repository as private")
    _add(end, "--build_index", action="store_true", help="build the faiss retrieval index of the dataset")
    _add(end, "--export_rvc", metavar="PATH",
                     help="also write the merged voice as an RVC WebUI/Applio .pth file at PATH")
    _add(end, "--skip_final_validation", action="store_true",
                     help="do not reload the saved adapter onto a fresh base to convert a clip at the end")
    parser.set_defaults(**TrainingConfig.defaults())
    return parser


def check_args(args: argparse.Namespace | TrainingConfig) -> TrainingConfig:
    """The checked `TrainingConfig` of parsed options (`args` itself is not changed)."""
    return TrainingConfig.from_namespace(args)


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> TrainingConfig:
    """Parse and check `argv` (default: `sys.argv[1:]`); `prog` names the command in usage and errors."""
    return check_args(build_parser(prog).parse_args(argv))
