"""`TrainingConfig`: the typed settings of a run, filled from the command line or built in Python, never mutated."""

from __future__ import annotations

import dataclasses

import pytest

from rvc_peft.training import TrainingConfig, TrainingSetupError, build_parser, check_args, main, parse_args
from tests.training.utils import narrow_discriminator, train_args


def _required() -> dict[str, str]:
    return {"pretrained_model_name_or_path": "b", "train_data_dir": "d"}


def test_parser_defaults_are_the_dataclass_defaults() -> None:
    parsed = vars(build_parser().parse_args(["--pretrained_model_name_or_path", "b", "--train_data_dir", "d"]))
    for name, default in TrainingConfig.defaults().items():
        assert parsed[name] == default, name
    assert set(parsed) == {f.name for f in dataclasses.fields(TrainingConfig)}  # one option per field, no extras


def test_kebab_and_snake_spellings_are_the_same_option() -> None:
    snake = parse_args(["--pretrained_model_name_or_path", "b", "--train_data_dir", "d", "--learning_rate", "3e-4",
                        "--max_train_steps", "7", "--no-bucket_by_length", "--lora_preset", "generator+flow"])
    kebab = parse_args(["--pretrained-model-name-or-path", "b", "--train-data-dir", "d", "--learning-rate", "3e-4",
                        "--max-train-steps", "7", "--no-bucket-by-length", "--lora-preset", "generator+flow"])
    assert snake == kebab
    assert (snake.learning_rate, snake.max_train_steps, snake.bucket_by_length) == (3e-4, 7, False)


def test_derived_defaults_are_resolved_at_construction_without_touching_the_namespace() -> None:
    namespace = build_parser().parse_args(["--pretrained_model_name_or_path", "b", "--train_data_dir", "d",
                                           "--rank", "4", "--learning_rate", "2e-4", "--report_to", "none"])
    config = check_args(namespace)
    assert (config.lora_alpha, config.discriminator_rank, config.discriminator_learning_rate) == (8, 4, 2e-4)
    assert config.report_to is None
    assert (namespace.lora_alpha, namespace.discriminator_rank, namespace.discriminator_learning_rate) == (None, None, None)
    assert namespace.report_to == "none"
    assert TrainingConfig(**_required(), rank=4, learning_rate=2e-4, report_to="none") == config


@pytest.mark.parametrize(("overrides", "message"), [
    ({"rank": 0}, "--rank must be at least 1, got 0"),
    ({"learning_rate": -1.0}, "--learning_rate must be positive, got -1.0"),
    ({"loss": "l2"}, "--loss 'l2' is not one of full, mel_kl, mel"),
    ({"lr_decay": 1.5}, r"--lr_decay must be in \(0, 1\], got 1.5"),
    ({"loss": "mel", "discriminator_mode": "lora"}, "--discriminator_mode only applies to --loss full"),
    ({"lora_preset": "decoderr"}, "--lora_preset 'decoderr' is not a preset"),
    ({"mixed_precision": "fp8"}, "--mixed_precision 'fp8' is not one of no, fp16, bf16"),
])
def test_bad_settings_are_refused_in_python_as_on_the_command_line(overrides: dict, message: str) -> None:
    with pytest.raises(TrainingSetupError, match=message):
        TrainingConfig(**_required(), **overrides)


@pytest.mark.slow
def test_the_trainer_runs_from_a_dataclass_and_changes_neither_it_nor_the_model_config(assets, tmp_path) -> None:
    config = parse_args(train_args(assets["base"], assets["data"], tmp_path / "cli", "--max_train_steps", "2",
                                   "--skip_final_validation"))
    built = TrainingConfig(
        pretrained_model_name_or_path=str(assets["base"]), train_data_dir=str(assets["data"]),
        output_dir=str(tmp_path / "cli"), train_batch_size=2, segment_frames=8, report_to="none",
        num_validation_clips=1, validation_steps=1000, checkpointing_steps=1000, logging_steps=1,
        max_train_steps=2, skip_final_validation=True,
    )
    assert built == config  # the same run, whether typed in Python or parsed
    before = dataclasses.asdict(built)
    result = main(built, discriminator=narrow_discriminator("v2"))
    assert result.global_step == 2 and (tmp_path / "cli" / "adapter_config.json").exists()
    assert dataclasses.asdict(built) == before  # max_train_steps, lora_alpha, ... untouched by the run


def test_epochs_do_not_write_max_train_steps_back(assets, tmp_path) -> None:
    from rvc_peft.training import RVCTrainer

    config = parse_args(train_args(assets["base"], assets["data"], tmp_path / "out", "--num_train_epochs", "2"))
    trainer = RVCTrainer(config, discriminator=narrow_discriminator("v2"))
    assert trainer.max_train_steps == 2 * trainer.updates_per_epoch
    assert config.max_train_steps is None
    # the 8-frame window is passed to the model, not written into its config
    assert trainer.segment_frames == 8 and trainer.generator.get_base_model().segment_frames != 8
