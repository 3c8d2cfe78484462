"""Bad inputs fail before the first step with a message that names the files and what does not match."""

import pytest

from rvc_peft.checkpoints import export_rvc, save_rvc_checkpoint
from rvc_peft.testing import random_synthesizer, small_config
from rvc_peft.training import TrainingSetupError, main, parse_args
from rvc_peft.training.trainer import RVCTrainer

from .utils import make_synthetic_dataset, narrow_discriminator, train_args


def _trainer(assets, out, *extra, base=None, data=None, discriminator=None):
    args = parse_args(train_args(base or assets["base"], data or assets["data"], out, *extra))
    return RVCTrainer(args, discriminator=discriminator)


def test_missing_and_foreign_dataset_folders(assets, tmp_path):
    with pytest.raises(TrainingSetupError, match=r"--train_data_dir: .*nowhere: no such folder"):
        _trainer(assets, tmp_path / "out", data=tmp_path / "nowhere")
    (tmp_path / "foreign").mkdir()
    with pytest.raises(TrainingSetupError, match=r"foreign: not an rvc-peft dataset"):
        _trainer(assets, tmp_path / "out", data=tmp_path / "foreign")


def test_dataset_that_does_not_fit_the_base_names_both(assets, tmp_path):
    other = make_synthetic_dataset(tmp_path / "v1-48k", small_config("v1", use_f0=False, sampling_rate=48000),
                                   n_rows=1, seconds=0.3)
    with pytest.raises(TrainingSetupError) as err:
        _trainer(assets, tmp_path / "out", data=other)
    message = str(err.value)
    assert str(other) in message and str(assets["base"]) in message
    assert "v1 content features (256-d) but the base is an RVC v2 model (768-d)" in message
    assert "48000 Hz but the base is a 40000 Hz (40k) model" in message
    assert "has no pitch but the base is a model with pitch" in message


def test_discriminator_files_that_do_not_fit(assets, tmp_path):
    v1_file = save_rvc_checkpoint(narrow_discriminator("v1"), tmp_path / "f0D40k_v1.pth", kind="base")
    with pytest.raises(TrainingSetupError, match=r"--pretrained_discriminator does not fit base .*f0G40k\.pth \(an RVC "
                                                 r"v2 40k model\).*f0D40k_v1\.pth: version=v2 was requested but this "
                                                 r"is a v1 discriminator"):
        _trainer(assets, tmp_path / "out", "--pretrained_discriminator", str(v1_file))
    narrow_v2 = save_rvc_checkpoint(narrow_discriminator("v2"), tmp_path / "f0D40k.pth", kind="base")
    with pytest.raises(TrainingSetupError, match=r"f0D40k\.pth: .* has shape \[[\d, ]+\] in the file but"):
        _trainer(assets, tmp_path / "out", "--pretrained_discriminator", str(narrow_v2))
    generator_file = assets["base"]
    with pytest.raises(TrainingSetupError, match="synthesizer \\(G\\) checkpoint, not a discriminator"):
        _trainer(assets, tmp_path / "out", "--pretrained_discriminator", str(generator_file))


def test_exported_voice_cannot_be_trained(assets, tmp_path):
    voice = export_rvc(random_synthesizer(small_config()), tmp_path / "voice.pth")
    with pytest.raises(TrainingSetupError, match="no posterior encoder \\(enc_q\\).*pretrained base"):
        _trainer(assets, tmp_path / "out", base=voice)


def test_argument_combinations(assets, tmp_path):
    with pytest.raises(TrainingSetupError, match="--lora_preset 'decoders' is not a preset"):
        parse_args(train_args(assets["base"], assets["data"], tmp_path, "--lora_preset", "decoders"))
    with pytest.raises(TrainingSetupError, match="--train_batch_size must be at least 1"):
        parse_args(train_args(assets["base"], assets["data"], tmp_path, "--train_batch_size", "0"))
    with pytest.raises(TrainingSetupError, match="--discriminator_mode only applies to --loss full"):
        parse_args(train_args(assets["base"], assets["data"], tmp_path, "--loss", "mel", "--discriminator_mode",
                              "frozen"))
    with pytest.raises(TrainingSetupError, match="--discriminator_mode frozen needs --pretrained_discriminator"):
        _trainer(assets, tmp_path / "out", "--discriminator_mode", "frozen")
    with pytest.raises(TrainingSetupError, match=r"cannot put the adapter on .*f0G40k\.pth: Target modules "
                                                 r"dec\\\.nothing_here not found"):
        _trainer(assets, tmp_path / "out", "--lora_targets", "dec\\.nothing_here", discriminator=narrow_discriminator())
    args = parse_args(train_args(assets["base"], assets["data"], tmp_path))
    assert (args.lora_alpha, args.discriminator_learning_rate, args.lr_scheduler) == (16, 1e-4, "rvc_exponential")


def test_resume_with_another_adapter_shape_is_refused(assets, tmp_path):
    out = tmp_path / "out"
    main(parse_args(train_args(assets["base"], assets["data"], out, "--max_train_steps", "1", "--loss", "mel",
                               "--checkpointing_steps", "1", "--skip_final_validation", "--num_validation_clips", "0")))
    with pytest.raises(TrainingSetupError, match=r"it was made with --rank 8, this run has 4"):
        main(parse_args(train_args(assets["base"], assets["data"], out, "--max_train_steps", "2", "--loss", "mel",
                                   "--rank", "4", "--resume_from_checkpoint", "latest")))
    with pytest.raises(TrainingSetupError, match="no such checkpoint folder"):
        main(parse_args(train_args(assets["base"], assets["data"], out, "--loss", "mel", "--resume_from_checkpoint",
                                   str(tmp_path / "missing"))))

