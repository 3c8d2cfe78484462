"""RVC's training losses (`infer/lib/train/losses.py`), always evaluated in float32.

The discriminator outputs are lists with one entry per sub-discriminator (scale + periods), as returned by
`MultiPeriodDiscriminator`; feature maps are lists (per sub-discriminator) of lists (per layer) of tensors.
The per-discriminator terms are returned as tensors (not Python floats) so callers decide when to synchronise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# RVC's loss weights (configs/*.json "train" section); the feature-matching factor 2 is hard-coded in RVC.
C_MEL = 45.0
C_KL = 1.0
FEATURE_MATCHING_WEIGHT = 2.0


def discriminator_loss(
    real_outputs: Sequence[torch.Tensor], fake_outputs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Least-squares GAN loss of the discriminator: Σ_d [mean((1 − D(y))²) + mean(D(ŷ)²)].

    real_outputs / fake_outputs: one logits tensor [B, N_d] per sub-discriminator ->
    (total loss [], per-discriminator real terms, per-discriminator fake terms).
    """
    total = torch.zeros((), device=real_outputs[0].device, dtype=torch.float32)
    real_terms, fake_terms = [], []
    for real, fake in zip(real_outputs, fake_outputs, strict=True):
        real_term = torch.mean((1.0 - real.float()) ** 2)
        fake_term = torch.mean(fake.float() ** 2)
        total = total + real_term + fake_term
        real_terms.append(real_term.detach())
        fake_terms.append(fake_term.detach())
    return total, real_terms, fake_terms


def generator_loss(fake_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Least-squares GAN loss of the generator: Σ_d mean((1 − D(ŷ))²) -> (total [], per-discriminator terms)."""
    total = torch.zeros((), device=fake_outputs[0].device, dtype=torch.float32)
    terms = []
    for fake in fake_outputs:
        term = torch.mean((1.0 - fake.float()) ** 2)
        total = total + term
        terms.append(term.detach())
    return total, terms


def feature_loss(
    real_feature_maps: Sequence[Sequence[torch.Tensor]], fake_feature_maps: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching: 2 · Σ_{d, layer} mean|F_real − F_fake|, the real maps detached (no gradient to D's input)."""
    total = torch.zeros((), device=real_feature_maps[0][0].device, dtype=torch.float32)
    for real_maps, fake_maps in zip(real_feature_maps, fake_feature_maps, strict=True):
        for real, fake in zip(real_maps, fake_maps, strict=True):
            total = total + torch.mean(torch.abs(real.detach().float() - fake.float()))
    return total * FEATURE_MATCHING_WEIGHT


def kl_loss(
    z_p: torch.Tensor, logs_q: torch.Tensor, m_p: torch.Tensor, logs_p: torch.Tensor, z_mask: torch.Tensor
) -> torch.Tensor:
    """KL term between the flowed posterior sample and the prior (VITS), averaged over valid frames.

    z_p, logs_q, m_p, logs_p: [B, C, T]; z_mask: [B, 1, T] ->
    Σ[(logs_p − logs_q − ½ + ½ (z_p − m_p)² e^{−2 logs_p}) · mask] / Σ mask.
    """
    z_p, logs_q, m_p, logs_p, z_mask = (t.float() for t in (z_p, logs_q, m_p, logs_p, z_mask))
    kl = logs_p - logs_q - 0.5
    kl = kl + 0.5 * ((z_p - m_p) ** 2) * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask)


def mel_loss(target_mel: torch.Tensor, generated_mel: torch.Tensor) -> torch.Tensor:
    """RVC's reconstruction term: L1 between log-mel spectrograms [B, n_mels, T], times c_mel (45)."""
    return torch.nn.functional.l1_loss(target_mel.float(), generated_mel.float()) * C_MEL
