"""Small RVC models with random weights, for tests, examples and benchmarks.

`small_config` keeps the real architecture (every layer type, the upsampling layout of the chosen
sample rate, dilations 1/3/5, the NSF source) but shrinks channel counts so a model builds and runs in
milliseconds on a CPU. `tiny_content_encoder` does the same for ContentVec/HuBERT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .models import RVCConfig, RVCSynthesizer

if TYPE_CHECKING:
    from .features.content_encoder import ContentEncoder


def small_config(version: str = "v2", use_f0: bool = True, sampling_rate: int | str = 40000, **overrides: Any) -> RVCConfig:
    """A tiny `RVCConfig` of the real architecture (same layer layout, fewer channels)."""
    sizes: dict[str, Any] = {
        "inter_channels": 8, "hidden_channels": 16, "filter_channels": 32, "n_heads": 2, "n_layers": 2,
        "upsample_initial_channel": 32, "gin_channels": 8, "spk_embed_dim": 4,
    }
    sizes.update(overrides)
    return RVCConfig.from_preset(sampling_rate, version, use_f0, **sizes)


def random_synthesizer(config: RVCConfig | None = None, seed: int = 0) -> RVCSynthesizer:
    """An `RVCSynthesizer` with seeded random weights, in eval mode.

    The flow's zero-initialised output convs are randomised too, so every layer affects the output.
    """
    config = config if config is not None else small_config()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = RVCSynthesizer(config)
        with torch.no_grad():
            for layer in model.flow.flows[::2]:
                layer.post.weight.normal_(0.0, 0.05)
                layer.post.bias.normal_(0.0, 0.05)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def unit_gain_synthesizer(config: RVCConfig, seed: int = 0) -> RVCSynthesizer:
    """`random_synthesizer` with the decoder's convs re-drawn at std 1/sqrt(fan-in), weight norm folded.

    HiFi-GAN's N(0, 0.01) init makes an untrained decoder's output almost constant (changing every content frame
    moves it by ~1e-8), which would let content bugs pass unnoticed and makes benchmarks compare near-silence; at
    unit gain the output follows the input (the last conv is scaled down so the final tanh does not saturate).
    """
    from .models import fold_weight_norm

    model = fold_weight_norm(random_synthesizer(config, seed=seed))
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for module in model.dec.modules():
            if isinstance(module, torch.nn.ConvTranspose1d):
                fan_in = module.weight.shape[0] * module.weight.shape[2] // module.stride[0]
            elif isinstance(module, torch.nn.Conv1d):
                fan_in = module.weight[0].numel()
            else:
                continue
            module.weight.normal_(0.0, fan_in**-0.5, generator=generator)
        model.dec.conv_post.weight.mul_(0.2)  # keep tanh out of saturation
    return model


def randomize_lora(model: torch.nn.Module, seed: int = 1, scale: float = 0.3, parameters: str = "lora_") -> None:
    """Give LoRA tensors seeded random values: a stand-in for training, since PEFT starts B at zero (no effect).

    `parameters` selects them by name fragment: "lora_" (A and B) or "lora_B" (B only, A keeps PEFT's init).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if parameters in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def random_inputs(config: RVCConfig, frames: int = 40, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs for `RVCSynthesizer.infer`: content features, coarse pitch, F0 in Hz, lengths and speaker ids."""
    gen = torch.Generator().manual_seed(seed)
    phone = torch.randn(batch, frames, config.content_dim, generator=gen)
    f0 = 100.0 + 150.0 * torch.rand(batch, frames, generator=gen)
    f0[:, : frames // 8] = 0.0  # an unvoiced stretch
    mel = 1127.0 * torch.log1p(f0 / 700.0)
    lo, hi = 1127.0 * torch.log1p(torch.tensor(50 / 700.0)), 1127.0 * torch.log1p(torch.tensor(1100 / 700.0))
    pitch = torch.where(mel > 0, (mel - lo) * 254 / (hi - lo) + 1, mel).clamp(1, 255).round().long()
    inputs = {
        "phone": phone,
        "phone_lengths": torch.full((batch,), frames, dtype=torch.long),
        "sid": torch.zeros(batch, dtype=torch.long),
    }
    if config.use_f0:
        inputs.update(pitch=pitch, nsff0=f0)
    return inputs


def tiny_content_encoder(seed: int = 0, version: str = "v1", *, hidden_size: int = 32,
                         conv_channels: int = 16) -> ContentEncoder:
    """A ContentVec-shaped content encoder with random weights and few channels, frozen, in eval mode.

    HuBERT-base's conv stack (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: 50 frames/s at 16 kHz), 12 transformer
    layers of width `hidden_size` and a `final_proj` to 256 (the v1 width). v2 features are `hidden_size` wide.
    """
    from transformers import HubertConfig, HubertModel

    from .features.content_encoder import ContentEncoder

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        config = HubertConfig(hidden_size=hidden_size, num_hidden_layers=12, num_attention_heads=2,
                              intermediate_size=2 * hidden_size, conv_dim=(conv_channels,) * 7,
                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        encoder = ContentEncoder(HubertModel(config).eval(), torch.nn.Linear(hidden_size, 256), version,
                                 kind="contentvec", name_or_path="tiny-contentvec")
    finally:
        torch.random.set_rng_state(generator_state)
    return encoder.eval().requires_grad_(False)
