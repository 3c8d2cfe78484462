"""Pretraining the lab base (pack + training loop + RVC base files + model card) and the base shipped in the
package: it loads as an RVC v2 32k base and it speaks (speaker similarity and DNSMOS of a resynthesis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvc_peft import load_discriminator, load_synthesizer
from rvc_peft.cli import main
from rvc_peft.features.content_encoder import load_content_encoder
from rvc_peft.features.lab_encoder import MFCCContentEncoder
from rvc_peft.lab.assets import lab_base_files
from rvc_peft.lab.corpus import VOICES, build_corpus, speaker_files
from rvc_peft.lab.pretrain import CONFIGS, PretrainSettings, lab_config, load_pack, pack_corpus, pretrain


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory: pytest.TempPathFactory) -> dict:
    for name in ("espeak-en-us-m1", "espeak-en-us-f2"):
        if VOICES[name].unavailable_reason():
            pytest.skip(f"{name}: {VOICES[name].unavailable_reason()}")
    out = tmp_path_factory.mktemp("corpus")
    return build_corpus(out, voices=["espeak-en-us-m1", "espeak-en-us-f2"], sentences=["s000", "s001", "s035"],
                        progress=False)


def test_pack_round_trip(two_voices, tmp_path):
    pack = pack_corpus(two_voices["corpus_dir"], tmp_path / "pack.npz", f0_method="pm", progress=False)
    audio, f0, speaker, meta = load_pack(pack)
    assert meta["speakers"] == ["espeak-en-us-m1", "espeak-en-us-f2"] and meta["f0_method"] == "pm"
    assert speaker.tolist() == [0, 0, 1, 1] and len(meta["files"]) == 4  # train sentences only (s035 is held out)
    for wav, pitch in zip(audio, f0, strict=True):
        assert wav.dtype == np.float32 and 0.05 < np.abs(wav).max() <= 1.0
        assert abs(len(pitch) - len(wav) // 160) <= 1  # 100 frames per second at 16 kHz
    male, female = (np.median(np.concatenate([p[p > 0] for p, s in zip(f0, speaker) if s == k])) for k in (0, 1))
    assert female > 1.4 * male  # the two voices' F0 survived the int16 round trip
    np.savez(tmp_path / "old.npz", meta=np.asarray(json.dumps({"pack_version": 0})))
    with pytest.raises(ValueError, match="old.npz: pack version 0"):
        load_pack(tmp_path / "old.npz")


@pytest.mark.slow
def test_pretrain_writes_rvc_base_files_and_a_model_card(two_voices, tmp_path):
    out = tmp_path / "base"
    code = main(["lab-base", "--corpus", str(two_voices["corpus_dir"]), "--out", str(out), "--max-steps", "2",
                 "--batch-size", "2", "--f0-method", "pm", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["step"] == 2 and summary["final"] and summary["pack"]["speakers"][0] == "espeak-en-us-m1"
    assert summary["parameters_g"] == sum(p.numel() for p in load_synthesizer(out / "f0G32k.pth").parameters())
    model = load_synthesizer(out / "f0G32k.pth")
    assert (model.config.version, model.config.sampling_rate, model.config.use_f0) == ("v2", 32000, True)
    assert model.config.hidden_channels == CONFIGS["compact"]["hidden_channels"]
    assert load_discriminator(out / "f0D32k.pth").version == "v2"
    raw = torch.load(out / "f0G32k.pth", weights_only=True)
    assert set(raw) == {"model"} and next(iter(raw["model"].values())).dtype == torch.float16  # RVC's base format
    card = (out / "README.md").read_text()
    assert "NOT ContentVec" in card and "2 steps" in card and "synthetic" in card
    assert isinstance(load_content_encoder(out / "content_encoder", "v2"), MFCCContentEncoder)


def test_pretrain_refuses_a_pack_without_long_enough_utterances(two_voices, tmp_path):
    pack = pack_corpus(two_voices["corpus_dir"], tmp_path / "pack.npz", f0_method="pm", progress=False)
    with pytest.raises(ValueError, match="no utterance has 100000 frames"):
        pretrain(pack, tmp_path / "out", PretrainSettings(max_steps=1, crop_frames=100000), progress=False)
    with pytest.raises(ValueError, match="unknown lab config 'huge'"):
        lab_config("huge")


def test_shipped_lab_base_loads_as_an_rvc_base():
    files = lab_base_files()
    model = load_synthesizer(files.synthesizer)
    assert (model.config.version, model.config.sampling_rate, model.config.use_f0) == ("v2", 32000, True)
    assert (model.config.hidden_channels, model.config.upsample_initial_channel) == (128, 256)
    assert files.synthesizer.stat().st_size < 30_000_000
    assert "NOT ContentVec" in files.model_card.read_text()
    training = json.loads((files.folder / "training.json").read_text())
    assert training["step"] > 1000 and training["pack"]["speakers"][0] == "espeak-en-us-m1"
    with pytest.raises(FileNotFoundError, match="rebuild it with `rvc-peft lab-base`"):
        lab_base_files(files.folder.parent)


def test_shipped_lab_base_speaks(two_voices):
    """Base speaker 0 (espeak m1) reading a sentence it never trained on, resynthesized with its own speaker row:
    the output is speech (DNSMOS) in m1's voice rather than f2's (Resemblyzer)."""
    pytest.importorskip("resemblyzer")
    pytest.importorskip("speechmos")
    from rvc_peft.features.audio import load_audio
    from rvc_peft.features.pitch import extract_f0, f0_to_coarse
    from rvc_peft.inference.quality import dnsmos, speaker_similarity

    files = lab_base_files()
    model = load_synthesizer(files.synthesizer, keep_posterior_encoder=False)
    encoder = load_content_encoder(files.content_encoder, "v2")
    [m1_new] = [p for p in speaker_files(two_voices, "espeak-en-us-m1", "all") if p.stem == "s035"]
    wav = load_audio(m1_new, 16000)
    phone = torch.from_numpy(encoder.extract(wav)).repeat_interleave(2, dim=0)
    f0 = extract_f0(wav, "pm")
    frames = min(len(phone), len(f0))
    torch.manual_seed(0)
    audio, *_ = model.infer(phone[None, :frames], torch.tensor([frames]), torch.from_numpy(f0_to_coarse(f0[:frames]))[None],
                            torch.from_numpy(f0[:frames].astype(np.float32))[None], torch.tensor([0]))
    out = audio[0, 0].numpy()
    m1_train = [str(p) for p in speaker_files(two_voices, "espeak-en-us-m1", "train")]
    f2_train = [str(p) for p in speaker_files(two_voices, "espeak-en-us-f2", "train")]
    to_m1, to_f2 = speaker_similarity(out, 32000, m1_train), speaker_similarity(out, 32000, f2_train)
    quality = dnsmos(out, 32000)
    assert to_m1 > 0.7 and to_m1 > to_f2 + 0.1, (to_m1, to_f2)
    assert quality["dnsmos_ovrl"] > 2.0, quality  # noise scores ~1.1; the random-weight demo scored 1.96
