"""GRPO's pure pieces against naive formulas and against TRL 1.16.0's GRPOTrainer._compute_loss.

TRL's loss is a private method of its trainer, so its formula is written out below (`trl_grpo_loss`), following
trl/trainer/grpo_trainer.py of TRL 1.16.0 for importance_sampling_level 'token', no delta, no entropy mask,
no vLLM correction, one process and gradient_accumulation_steps 1 (its normaliser for dapo is then the
batch's completion tokens). Our loss of one batch is the summed loss divided by its units, as the loop does.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from tunesmith.train.stages.grpo_loss import (
    equal_reward_groups,
    group_advantages,
    grpo_token_losses,
    loss_units,
    reduce_token_losses,
)

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]


def trl_grpo_loss(logps, old_logps, ref_logps, advantages, mask, loss_type, epsilon_low, epsilon_high, beta,
                  max_completion_length):
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)  # dapo: num_items_in_batch


def fixed_batch(seed=0, rows=6, width=7):
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(rows, width, generator=generator, dtype=torch.float64) * 3
    old = logps + torch.randn(rows, width, generator=generator, dtype=torch.float64) * 0.3  # ratios beyond the clip
    ref = logps + torch.randn(rows, width, generator=generator, dtype=torch.float64) * 0.5
    advantages = torch.randn(rows, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2])
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).double()
    return logps, old, ref, advantages, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(loss_type, beta):
    logps, old, ref, advantages, mask = fixed_batch()
    epsilon, epsilon_high, max_new = 0.2, 0.28, 9
    ours_in = logps.clone().requires_grad_(True)
    losses, _, _ = grpo_token_losses(ours_in, old, ref if beta else None, advantages, epsilon, epsilon_high, beta)
    ours = reduce_token_losses(losses, mask, loss_type, max_new) / loss_units(mask, loss_type, max_new)
    (ours_grad,) = torch.autograd.grad(ours, ours_in)
    trl_in = logps.clone().requires_grad_(True)
    theirs = trl_grpo_loss(trl_in, old, ref, advantages, mask, loss_type, epsilon, epsilon_high, beta, max_new)
    (theirs_grad,) = torch.autograd.grad(theirs, trl_in)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-7)
    assert ours_grad.abs().sum() > 0


def test_first_iteration_ratio_is_exactly_one():
    """num_iterations 1: no old log-probs are kept; the ratio is exp(logp - logp.detach()) = 1 exactly, and
    the gradient is the plain policy gradient -A * dlogp (per the normaliser)."""
    logps, _, _, advantages, mask = fixed_batch(seed=3)
    logps.requires_grad_(True)
    losses, clipped, _ = grpo_token_losses(logps, None, None, advantages, 0.2, 0.2, 0.0)
    assert torch.equal(losses.detach(), -advantages.unsqueeze(1).expand_as(losses))
    assert not clipped.any()
    loss = reduce_token_losses(losses, mask, "dapo", 9)
    (grad,) = torch.autograd.grad(loss, logps)
    torch.testing.assert_close(grad, -advantages.unsqueeze(1) * mask)


def naive_advantages(rewards, group_size, scale):
    groups = [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]
    batch_std = statistics.stdev(rewards)
    out = []
    for group in groups:
        mean = sum(group) / len(group)
        std = {"group": statistics.stdev(group), "batch": batch_std, "none": None}[scale]
        out += [(r - mean) / (std + 1e-4) if std is not None else r - mean for r in group]
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_the_naive_formula(scale):
    rewards = [1.0, 0.0, 0.5, 2.0, 3.0, 3.0, 1.0, -1.0, 0.25]
    got = group_advantages(torch.tensor(rewards, dtype=torch.float64), 3, scale)
    assert got.tolist() == pytest.approx(naive_advantages(rewards, 3, scale), rel=1e-12)


def test_a_group_of_equal_rewards_has_zero_advantage():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        assert group_advantages(rewards, 3, scale)[:3].tolist() == [0.0, 0.0, 0.0]
    assert equal_reward_groups(rewards, 3).tolist() == [True, False]


def test_unscored_completions_are_left_out_and_get_zero_advantage():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 2.0], dtype=torch.float64)
    got = group_advantages(rewards, 4, "none")
    assert got.tolist() == pytest.approx([0.0, 0.0, -1.0, 1.0])  # mean of the scored three is 1
