"""Bad inputs fail before the first step with a message that names the files and what does not match (and a real
pretrained discriminator file that does fit trains)."""

import json
import shutil

import pytest
import torch

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


def test_empty_dataset_and_no_slice_long_enough_are_refused_before_anything_is_written(assets, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    shutil.copytree(assets["data"], empty)  # a dataset whose description says it has no slices
    info = json.loads((empty / "rvc_dataset.json").read_text())
    (empty / "rvc_dataset.json").write_text(json.dumps({**info, "num_rows": 0}))
    with pytest.raises(TrainingSetupError, match=r"--train_data_dir: .*empty: the dataset is empty \(0 slices\)"):
        _trainer(assets, out, data=empty, discriminator=narrow_discriminator())
    # 0.5 s slices are 50 frames: a 60-frame window fits none of them
    with pytest.raises(TrainingSetupError, match=r"no slice is long enough to train on \(6 slices, 1 held out for "
                                                 r"validation, the window is 60 frames\); add audio, lower "
                                                 r"--num_validation_clips or --segment_frames"):
        _trainer(assets, out, "--segment_frames", "60", discriminator=narrow_discriminator())
    with pytest.raises(TrainingSetupError, match=r"no slice is long enough to train on \(6 slices, 6 held out"):
        _trainer(assets, out, "--num_validation_clips", "6", discriminator=narrow_discriminator())
    assert not out.exists()  # a refused run leaves nothing behind


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



def test_training_from_a_real_full_size_discriminator_file(tmp_path):
    """A full-size RVC v1 `D` file (as f0D40k.pth, random weights) loads, fits a v1 base and trains one step.

    The loader only takes RVC's real discriminator shapes, so this is the one test with the full 55M-parameter
    model: v1 (smaller than v2), batch 1, the minimal window, --discriminator_mode lora (so the fixed cost is the
    forward/backward through D, not 55M parameters of AdamW state).
    """
    from rvc_peft.checkpoints import load_discriminator, save_rvc_checkpoint
    from rvc_peft.models import MultiPeriodDiscriminator

    from .utils import save_base

    config = small_config("v1")
    base = save_base(tmp_path / "f0G40k.pth", config)
    data = make_synthetic_dataset(tmp_path / "data", config, n_rows=2, seconds=0.3)
    torch.manual_seed(0)
    d_file = save_rvc_checkpoint(MultiPeriodDiscriminator("v1"), tmp_path / "f0D40k.pth", kind="base")
    out = tmp_path / "out"
    args = parse_args(train_args(base, data, out, "--pretrained_discriminator", str(d_file), "--discriminator_mode",
                                 "lora", "--train_batch_size", "1", "--max_train_steps", "1",
                                 "--num_validation_clips", "0", "--skip_final_validation"))
    trainer = RVCTrainer(args)
    # the run's discriminator is the file's (its fresh adapter adds nothing yet): same outputs on the same audio
    reference = load_discriminator(d_file, version="v1").float()
    audio = torch.randn(1, 1, 8 * config.hop_length, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        ours, theirs = trainer.discriminator(audio, audio.flip(-1)), reference(audio, audio.flip(-1))
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    adapters = {n: p.detach().clone() for n, p in trainer.discriminator.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    result = trainer.train()
    assert result.global_step == 1
    assert all(torch.isfinite(torch.tensor(v)) for k, v in result.losses.items() if k.startswith("loss/"))
    changed = [n for n, p in trainer.discriminator.named_parameters() if p.requires_grad and not torch.equal(p, adapters[n])]
    assert changed  # the discriminator's adapter trained
    assert f"lora, from {d_file}" in (out / "README.md").read_text()  # the model card names the D file
