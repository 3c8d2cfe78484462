"""Fixtures for the conversion tests: tiny real components (RVC synthesizer, HuBERT content encoder, LoRA voices).

Everything is the real architecture at toy width so a conversion takes a fraction of a second:
* synthesizer: `small_config("v1")` at 40 kHz with one resblock kernel per stage (dilations 1/3/5 kept);
* content encoder: a transformers `HubertModel` with the real conv stack (so F = (L - 400) // 320 + 1), 16-channel
  convs and 32-wide layers, plus `final_proj` to RVC v1's 256 dims;
* voices: LoRA adapters saved with `save_pretrained` on that base (random non-zero B so they change the output).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rvc_peft  # noqa: F401  (registers the RVC LoRA layers with PEFT)
from rvc_peft.features.content_encoder import ContentEncoder
from rvc_peft.inference import VoiceBank, VoiceConverter, WindowConfig
from rvc_peft.testing import randomize_lora, small_config, tiny_content_encoder

SR_16K = 16000
# Scaled-down windowing (0.3 s context, split every 2 s) so tests exercise segmentation on seconds of audio.
SMALL_WINDOW = WindowConfig(x_pad=0.3, x_query=0.5, x_center=2.0, x_max=2.5)


def tiny_config(use_f0: bool = True, **overrides):
    sizes = {"resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}
    sizes.update(overrides)
    return small_config("v1", use_f0, 40000, **sizes)


def tiny_synthesizer(config=None, seed: int = 0):
    """`rvc_peft.testing.unit_gain_synthesizer` (audible decoder, weight norm folded) of the tiny config by default."""
    from rvc_peft.testing import unit_gain_synthesizer

    return unit_gain_synthesizer(config or tiny_config(), seed=seed)


def tiny_encoder(seed: int = 0, version: str = "v1") -> ContentEncoder:
    return tiny_content_encoder(seed, version)


def steady_pitch(audio16k: np.ndarray, p_len: int) -> np.ndarray:
    """A cheap pitch 'method': 150 Hz with an unvoiced stretch every half second (for speed and known values)."""
    frames = np.arange(p_len)
    return np.where(frames % 50 < 40, 150.0 + 20.0 * np.sin(frames / 15.0), 0.0).astype(np.float32)


def make_adapter(path, seed: int, preset: str = "generator", speaker_id: int = 0, config=None) -> None:
    from rvc_peft.tuners import RVCLoraConfig, get_rvc_peft_model

    base = tiny_synthesizer(config or tiny_config())
    base.config.speaker_id = speaker_id
    model = get_rvc_peft_model(base, RVCLoraConfig(target_modules=preset, r=4, lora_alpha=8))
    randomize_lora(model, seed=seed, scale=0.08)
    model.save_pretrained(str(path))


@pytest.fixture(scope="session")
def adapters(tmp_path_factory):
    """{name: folder}: alice (generator), bob (generator+flow, speaker 2), other (made for a 32 kHz base)."""
    root = tmp_path_factory.mktemp("adapters")
    make_adapter(root / "alice", 1)
    make_adapter(root / "bob", 2, "generator+flow", speaker_id=2)
    make_adapter(root / "other", 3, config=small_config("v1", True, 32000))
    return {name: root / name for name in ("alice", "bob", "other")}


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """An exported RVC voice file as the base and a transformers-format content encoder folder (for CLI tests)."""
    from rvc_peft.checkpoints import export_rvc

    root = tmp_path_factory.mktemp("models")
    export_rvc(tiny_synthesizer(), root / "base.pth")
    tiny_encoder().save_pretrained(root / "hubert")
    return root


@pytest.fixture()
def encoder():
    return tiny_encoder()


@pytest.fixture()
def base():
    return tiny_synthesizer()


@pytest.fixture()
def converter(base, encoder):
    return VoiceConverter(base, encoder, f0_method=steady_pitch, seed=0, window=SMALL_WINDOW)


@pytest.fixture()
def bank(adapters):
    voices = VoiceBank(tiny_synthesizer())
    voices.add_voice(adapters["alice"])
    voices.add_voice(adapters["bob"])
    return voices


@pytest.fixture()
def no_noise(monkeypatch):
    """RVC's synthesizer draws Gaussian noise (prior sample, NSF noise); parity tests set it to zero (spec §1.3)."""
    monkeypatch.setattr(torch, "randn_like", lambda x, *args, **kwargs: torch.zeros_like(x))


def speech_like(seconds: float, seed: int = 0, sr: int = SR_16K) -> np.ndarray:
    """Harmonic 'syllables' with quiet gaps every 0.7 s (so quiet-point search has something to find)."""
    from rvc_peft.features.synthetic import voiced_signal

    gaps = [(t + 0.5, t + 0.7) for t in np.arange(0.0, seconds, 0.7)]
    audio, _ = voiced_signal(140.0, seconds, sample_rate=sr, seed=seed, unvoiced_gaps=gaps, noise_level=0.002)
    return audio
