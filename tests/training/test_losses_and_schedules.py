"""RVC's loss formulas against element-by-element recomputation, and the learning-rate schedules against torch's."""

import math

import pytest
import torch

from rvc_peft.training.losses import discriminator_loss, feature_loss, generator_loss, kl_loss, mel_loss
from rvc_peft.training.optim import LearningRateSchedule, build_optimizer, build_scheduler


def test_discriminator_and_generator_losses_are_least_squares_sums():
    real = [torch.tensor([[0.5, 1.5]]), torch.tensor([[2.0, 0.0, 1.0]])]
    fake = [torch.tensor([[0.25, -0.5]]), torch.tensor([[1.0, 3.0, 0.0]])]
    total, real_terms, fake_terms = discriminator_loss(real, fake)
    # by hand: mean((1-r)^2) = [(0.25+0.25)/2, (1+1+0)/3]; mean(f^2) = [(0.0625+0.25)/2, (1+9+0)/3]
    assert [float(t) for t in real_terms] == pytest.approx([0.25, 2 / 3])
    assert [float(t) for t in fake_terms] == pytest.approx([0.15625, 10 / 3])
    assert float(total) == pytest.approx(0.25 + 2 / 3 + 0.15625 + 10 / 3)
    gen_total, gen_terms = generator_loss(fake)
    # mean((1-f)^2) = [(0.5625+2.25)/2, (0+4+1)/3]
    assert [float(t) for t in gen_terms] == pytest.approx([1.40625, 5 / 3])
    assert float(gen_total) == pytest.approx(1.40625 + 5 / 3)


def test_feature_loss_is_twice_the_summed_mean_abs_difference_and_detaches_real_maps():
    torch.manual_seed(1)
    real = [[torch.randn(2, 4, 5, requires_grad=True), torch.randn(2, 1, 3, requires_grad=True)],
            [torch.randn(2, 8, requires_grad=True)]]
    fake = [[torch.randn(2, 4, 5, requires_grad=True), torch.randn(2, 1, 3, requires_grad=True)],
            [torch.randn(2, 8, requires_grad=True)]]
    expected = 0.0
    for r_maps, f_maps in zip(real, fake):
        for r, f in zip(r_maps, f_maps):
            diffs = (r - f).abs().flatten().tolist()
            expected += sum(diffs) / len(diffs)
    loss = feature_loss(real, fake)
    assert float(loss.detach()) == pytest.approx(2 * expected, rel=1e-6)
    loss.backward()
    assert all(r.grad is None for maps in real for r in maps)
    assert all(f.grad is not None for maps in fake for f in maps)


def test_kl_loss_matches_a_per_element_loop_over_masked_frames():
    torch.manual_seed(2)
    z_p, logs_q, m_p, logs_p = (torch.randn(2, 3, 6) * 0.5 for _ in range(4))
    mask = torch.ones(2, 1, 6)
    mask[1, :, 4:] = 0  # second item is 4 frames long
    total, count = 0.0, 0.0
    for b in range(2):
        for t in range(6):
            if mask[b, 0, t] == 0:
                continue
            count += 1
            for c in range(3):
                lp, lq, zp, mp = (float(x[b, c, t]) for x in (logs_p, logs_q, z_p, m_p))
                total += lp - lq - 0.5 + 0.5 * (zp - mp) ** 2 * math.exp(-2 * lp)
    assert float(kl_loss(z_p, logs_q, m_p, logs_p, mask)) == pytest.approx(total / count, rel=1e-5)


def test_losses_are_computed_in_float32_from_half_inputs():
    mel_a, mel_b = torch.zeros(1, 4, 3, dtype=torch.float16), torch.full((1, 4, 3), 0.5, dtype=torch.bfloat16)
    assert mel_loss(mel_a, mel_b).dtype == torch.float32
    assert float(mel_loss(mel_a, mel_b)) == pytest.approx(45 * 0.5)
    total, _, _ = discriminator_loss([torch.ones(1, 2, dtype=torch.float16)], [torch.ones(1, 2, dtype=torch.float16)])
    assert total.dtype == torch.float32 and float(total) == 1.0


def _lrs(schedule: LearningRateSchedule, steps: int) -> list[float]:
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = build_scheduler(optimizer, schedule)
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return values


def test_rvc_exponential_schedule_equals_exponential_lr_stepped_per_epoch():
    steps_per_epoch, gamma = 3, 0.9
    ours = _lrs(LearningRateSchedule("rvc_exponential", total_steps=12, steps_per_epoch=steps_per_epoch,
                                     gamma=gamma), 12)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    expected = []
    for epoch in range(4):
        expected += [reference.get_last_lr()[0]] * steps_per_epoch
        optimizer.step()
        reference.step()
    assert ours == pytest.approx(expected, rel=1e-12)


def test_warmup_then_cosine_and_linear():
    cosine = _lrs(LearningRateSchedule("cosine", total_steps=10, steps_per_epoch=5, warmup_steps=2), 11)
    assert cosine[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert cosine[6] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert cosine[10] == pytest.approx(0.0, abs=1e-12)
    linear = _lrs(LearningRateSchedule("linear", total_steps=4, steps_per_epoch=4), 5)
    assert linear == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])
    constant = _lrs(LearningRateSchedule("constant", total_steps=4, steps_per_epoch=1, warmup_steps=4), 6)
    assert constant == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_optimizer_uses_rvc_adamw_settings_on_trainable_parameters_only():
    frozen, trained = torch.nn.Parameter(torch.zeros(2), requires_grad=False), torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([frozen, trained], lr=1e-4)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-4, (0.8, 0.99), 1e-9, 0.01)
    assert group["params"] == [trained]
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([frozen], lr=1e-4)
