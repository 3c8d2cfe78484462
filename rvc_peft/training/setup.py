"""Everything the training loop needs before its first step: dataset, base generator, adapter, discriminator.

Each check fails early with a `TrainingSetupError` that names the files involved and what does not match.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from ..checkpoints import CheckpointError, load_discriminator, load_synthesizer
from ..models import MultiPeriodDiscriminator, RVCSynthesizer, fold_weight_norm
from .config import TrainingConfig
from .errors import TrainingSetupError

logger = logging.getLogger(__name__)


def _warn_once(message: str) -> None:
    """Warn from the main process only (every process runs the setup)."""
    from accelerate import PartialState

    if not PartialState._shared_state or PartialState().is_main_process:
        logger.warning(message)

# discriminator convs that take an adapter in --discriminator_mode lora: every layer except the grouped convs of the
# scale discriminator (a LoRA over a grouped conv is not a grouped kernel)
DISCRIMINATOR_LORA_TARGETS = r"discriminators\.0\.(?:convs\.[05]|conv_post)|discriminators\.[1-9]\d*\.(?:convs\.\d+|conv_post)"


def load_training_dataset(args: TrainingConfig) -> tuple[Any, Any]:
    """(datasets.Dataset, RVCDatasetInfo) of `--train_data_dir`, with a clear error for missing/empty/foreign data."""
    from ..data import DatasetFormatError, load_rvc_dataset

    try:
        dataset, info = load_rvc_dataset(args.train_data_dir)
    except DatasetFormatError as err:
        raise TrainingSetupError(f"--train_data_dir: {err}") from None
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    return dataset, info


def load_base_generator(args: TrainingConfig, sample_rate: int) -> RVCSynthesizer:
    """The frozen base synthesizer (float32, train mode), posterior encoder included."""
    name = args.pretrained_model_name_or_path
    try:
        try:
            model = load_synthesizer(name, revision=args.revision)
        except CheckpointError as err:
            if "pass sample_rate" not in str(err):
                raise
            model = load_synthesizer(name, revision=args.revision, sample_rate=sample_rate)  # shapes fit several rates
    except CheckpointError as err:
        raise TrainingSetupError(f"--pretrained_model_name_or_path: {err}") from None
    if not hasattr(model, "enc_q"):
        raise TrainingSetupError(
            f"--pretrained_model_name_or_path {name}: this model has no posterior encoder (enc_q), as exported voices "
            "do, so it cannot be trained; start from a pretrained base (e.g. f0G40k.pth) or a G_*.pth checkpoint"
        )
    return model


def check_dataset_fits(info: Any, model: RVCSynthesizer, base_name: str, dataset_path: str) -> None:
    """The dataset must have the base's version (feature width), sample rate, pitch setting and speaker range."""
    config = model.config
    problems = []
    if info.version != config.version or info.content_dim != config.content_dim:
        problems.append(f"the dataset has {info.version} content features ({info.content_dim}-d) but the base is an "
                        f"RVC {config.version} model ({config.content_dim}-d), and RVC v1 models read the content "
                        "encoder's 256-d projected output, v2 models its 768-d last layer")
    if info.sample_rate != config.sampling_rate:
        problems.append(f"the dataset is at {info.sample_rate} Hz but the base is a {config.sampling_rate} Hz "
                        f"({config.sample_rate_name}) model")
    if bool(info.use_f0) != bool(config.use_f0):
        problems.append("the dataset has " + ("pitch" if info.use_f0 else "no pitch") + " but the base is a model "
                        + ("with" if config.use_f0 else "without") + " pitch (f0)")
    if not problems and info.hop_length != config.hop_length:
        problems.append(f"the dataset's hop length is {info.hop_length} but the base's is {config.hop_length}")
    speakers = [int(s) for s in (info.speakers or [])]
    if speakers and max(speakers) >= config.spk_embed_dim:
        problems.append(f"the dataset uses speaker id {max(speakers)} but the base has only {config.spk_embed_dim} "
                        "speaker rows")
    if problems:
        # the preprocess command's own flag spellings (--sample-rate, not the trainer's underscore style)
        flags = f"--sample-rate {config.sample_rate_name} --version {config.version}" + (
            "" if config.use_f0 else " --no-f0")
        raise TrainingSetupError(f"dataset {dataset_path} does not fit base model {base_name}: " + "; ".join(problems)
                                 + f". Preprocess the audio again for this base (rvc-peft preprocess {flags} ...) or "
                                 "pick a matching base.")


def build_lora_config(args: TrainingConfig) -> Any:
    """The generator adapter's `RVCLoraConfig` from --rank/--lora_alpha/--lora_preset/--lora_targets."""
    from ..tuners import RVCLoraConfig

    targets: Any = args.lora_preset
    if args.lora_targets is not None:
        text = args.lora_targets.strip()
        targets = [t.strip() for t in text.split(",") if t.strip()] if "," in text else text
    modules_to_save = ["emb_g"] if args.train_speaker_embedding else None
    try:
        return RVCLoraConfig(r=args.rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=targets, modules_to_save=modules_to_save)
    except ValueError as err:
        raise TrainingSetupError(f"adapter settings: {err}") from None


def build_generator(base: RVCSynthesizer, args: TrainingConfig) -> Any:
    """Wrap the base in a LoRA `PeftModel` (weight norm folded); only adapter (+ chosen) tensors are trainable."""
    from ..tuners import get_rvc_peft_model

    config = build_lora_config(args)
    try:
        model = get_rvc_peft_model(base, config)
    except ValueError as err:
        raise TrainingSetupError(f"cannot put the adapter on {args.pretrained_model_name_or_path}: {err}") from None
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainingSetupError(f"--lora_targets {args.lora_targets!r} matched no layer of the base model")
    return model.train()


def build_discriminator(args: TrainingConfig, model: RVCSynthesizer,
                        discriminator: nn.Module | None = None) -> nn.Module | None:
    """The discriminator for `--loss full` (None for `--loss mel`), set up for `--discriminator_mode`.

    `discriminator` (library use) replaces loading/initialising one. full: every weight trains (weight norm kept, as
    RVC); frozen: nothing trains; lora: weight norm folded and an adapter of rank --discriminator_rank on its
    non-grouped convs.
    """
    if args.loss != "full":
        return None
    version = model.config.version
    if discriminator is None and args.pretrained_discriminator is not None:
        try:
            discriminator = load_discriminator(args.pretrained_discriminator, version=version, revision=args.revision)
        except CheckpointError as err:
            raise TrainingSetupError(
                f"--pretrained_discriminator does not fit base {args.pretrained_model_name_or_path} (an RVC {version} "
                f"{model.config.sample_rate_name} model): {err}"
            ) from None
    elif discriminator is None and args.discriminator_mode != "full":
        raise TrainingSetupError(f"--discriminator_mode {args.discriminator_mode} needs --pretrained_discriminator: a "
                                 "random discriminator that cannot learn fully gives the generator no useful signal")
    elif discriminator is None:
        _warn_once("no --pretrained_discriminator: the discriminator starts from random weights. RVC starts it from "
                   "the pretrained D file matching the base (e.g. f0D40k.pth), which converges much faster.")
        discriminator = MultiPeriodDiscriminator(version)
    discriminator = discriminator.float().train()
    if args.discriminator_mode == "frozen":
        fold_weight_norm(discriminator)
        discriminator.requires_grad_(False)
    elif args.discriminator_mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        fold_weight_norm(discriminator)
        discriminator.requires_grad_(False)
        config = LoraConfig(r=args.discriminator_rank, lora_alpha=2 * args.discriminator_rank,
                            target_modules=DISCRIMINATOR_LORA_TARGETS)
        inject_adapter_in_model(config, discriminator)
    return discriminator


def needs_unused_parameter_search(args: TrainingConfig) -> bool:
    """DDP's `find_unused_parameters`: only when some trainable tensor gets no gradient from the loss.

    With `--loss mel` the text encoder (enc_p) and the flow take no part in the loss, so adapters there are unused.
    """
    if args.loss != "mel":
        return False
    if args.lora_targets is not None:
        return True
    from ..tuners import target_modules_for

    pattern = target_modules_for(args.lora_preset)
    return "flow" in pattern or "enc_p" in pattern


def describe_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable parameter count, total parameter count)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters())


def unused_when_mel_only(model: nn.Module) -> list[str]:
    """Trainable tensors of the text encoder / flow (they learn nothing under --loss mel)."""
    pattern = re.compile(r"(?:^|\.)(?:enc_p|flow)\.")
    return [name for name, p in model.named_parameters() if p.requires_grad and pattern.search(name)]
