"""GRPO as pure functions: group-relative advantages and the clipped surrogate with its normalisers.

Notation: per completion i and token t, r = exp(logp - old_logp) (the importance ratio; exactly 1 when the
policy has not moved since the rollout), A_i the completion's advantage, m the completion mask.

    token loss  l_it = -min(r A_i, clip(r, 1 - epsilon, 1 + epsilon_high) A_i) + beta * k3_it
    k3_it       = exp(ref - logp) - (ref - logp) - 1          (the unbiased, non-negative KL estimator)

loss_type says what the summed token losses are divided by (what the loop's `units` are):
    grpo     sum_i (sum_t m l / sum_t m) / n_completions      per-sequence mean, then mean over sequences
    bnpo     sum_it m l / sum_it m, per micro-batch           token mean within each micro-batch
    dr_grpo  sum_it m l / (n_completions * max_new_tokens)    a constant normaliser: no length bias
    dapo     sum_it m l / tokens of the whole window          token mean over all processes' tokens
"""

from __future__ import annotations

import torch

ADVANTAGE_EPS = 1e-4  # added to the std before dividing: a group of near-equal rewards does not explode


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str) -> torch.Tensor:
    """A_i = r_i - mean(group of i), divided by the group's (scale group) or the batch's (scale batch)
    sample std + ADVANTAGE_EPS, or not divided (scale none). `rewards` [n] lists each prompt's group_size
    completions together; a NaN reward (no function scored it) is left out of the statistics and gets A = 0.
    A group whose rewards are all equal has A = 0 for every member."""
    groups = rewards.view(-1, group_size)
    mean = torch.nanmean(groups, dim=1, keepdim=True)
    centred = groups - mean
    if scale == "group":
        centred = centred / (_nan_std(groups, dim=1) + ADVANTAGE_EPS)
    elif scale == "batch":
        centred = centred / (_nan_std(rewards.flatten(), dim=0) + ADVANTAGE_EPS)
    elif scale != "none":
        raise ValueError(f"unknown scale_rewards {scale!r}")
    return torch.nan_to_num(centred.flatten(), nan=0.0)


def equal_reward_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[groups] True where every scored reward of the group is the same (such a group teaches nothing)."""
    groups = rewards.view(-1, group_size)
    spread = torch.nan_to_num(groups, nan=0.0).amax(1) - torch.nan_to_num(groups, nan=0.0).amin(1)
    return spread == 0


def _nan_std(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample std (Bessel-corrected) over the non-NaN values; 0 where fewer than two are present."""
    count = (~values.isnan()).sum(dim, keepdim=True)
    mean = torch.nanmean(values, dim=dim, keepdim=True)
    squares = torch.nansum((values - mean) ** 2, dim=dim, keepdim=True)
    return (squares / (count - 1).clamp(min=1)).sqrt()


def grpo_token_losses(logps, old_logps, ref_logps, advantages, epsilon: float, epsilon_high: float, beta: float):
    """(l_it [B, T], clipped_it [B, T] bool, k3_it [B, T] or None) as in the module docstring.

    logps [B, T] carry the gradient; old_logps None means the rollout's own policy (r = 1 exactly);
    ref_logps may be None when beta is 0 (no reference model)."""
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    adv = advantages.unsqueeze(1)
    clipped_ratio = ratio.clamp(1 - epsilon, 1 + epsilon_high)
    losses = -torch.min(ratio * adv, clipped_ratio * adv)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
    kl = None
    if beta:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        losses = losses + beta * kl
    return losses, clipped, kl


def reduce_token_losses(losses: torch.Tensor, mask: torch.Tensor, loss_type: str, max_new_tokens: int
                        ) -> torch.Tensor:
    """The batch's loss summed over its units (see `loss_units`): dividing by the window's units gives the
    loss_type's normalisation."""
    masked = losses * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    if loss_type == "bnpo":  # the micro-batch's token mean, weighted by its completions
        return masked.sum() / mask.sum().clamp(min=1) * mask.shape[0]
    if loss_type in ("dr_grpo", "dapo"):
        return masked.sum()
    raise ValueError(f"unknown loss_type {loss_type!r}")


def loss_units(mask: torch.Tensor, loss_type: str, max_new_tokens: int) -> int:
    """What the loop divides the window's summed loss by: completions (grpo, bnpo), completions times
    max_new_tokens (dr_grpo), completion tokens (dapo)."""
    if loss_type in ("grpo", "bnpo"):
        return int(mask.shape[0])
    if loss_type == "dr_grpo":
        return int(mask.shape[0]) * max_new_tokens
    return int(mask.sum())
