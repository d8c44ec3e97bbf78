"""Losses as pure tensor functions, each with the naive formula it equals."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_sum(token_logps: torch.Tensor) -> torch.Tensor:
    """sum_i -log softmax(logits_i)[targets_i], given the targets' log-probs log softmax(logits_i)[targets_i]
    (train/token_logps.py computes them chunk by chunk, never holding all logits).

    Summed rather than averaged so that the loop can normalise by the target tokens of a whole
    gradient-accumulation window, not of one micro-batch.
    """
    return -token_logps.float().sum()


# Preference and RL losses. Each returns one value per example (pair, KTO example, or token for PPO) so
# that a stage can sum them and the loop can normalise by the units of the whole accumulation window.


def pairwise_reward_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """[pairs] -log sigmoid(r_chosen - r_rejected): the Bradley-Terry loss of a reward model."""
    return -F.logsigmoid(chosen.float() - rejected.float())


def dpo_losses(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    kind: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([pairs] losses, chosen rewards, rejected rewards) of DPO and its reference-based variants.

    With h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps):
      sigmoid: -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)   (eps = label_smoothing)
      ipo:     (h - 1 / (2 * beta))^2     (the caller passes length-averaged log-probs, as the IPO paper does)
      hinge:   max(0, 1 - beta * h)
    rewards = beta * (logps - ref_logps), detached.
    """
    chosen_ratio = chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = rejected_logps.float() - ref_rejected_logps.float()
    h = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif kind == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss kind {kind!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def simpo_losses(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([pairs] losses, chosen rewards, rejected rewards) of SimPO (no reference model).

    loss = -log sigmoid(beta * (avg_chosen - avg_rejected) - gamma), with avg_* the mean log-prob per
    response token; rewards = beta * avg_*, detached.
    """
    chosen, rejected = chosen_avg_logps.float(), rejected_avg_logps.float()
    losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def orpo_losses(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([pairs] losses, chosen rewards, rejected rewards) of ORPO (no reference model).

    With odds(p) = p / (1 - p) for p = exp(avg log-prob of a response):
      loss = -avg_chosen - lam * log sigmoid(log odds(p_chosen) - log odds(p_rejected))
    i.e. the chosen response's per-token NLL plus the weighted odds-ratio term; rewards = lam * avg_*.
    """
    chosen, rejected = chosen_avg_logps.float(), rejected_avg_logps.float()
    # log(1 - exp(x)) for x < 0, written to stay finite as x -> 0
    log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen)) - torch.log1p(-torch.exp(rejected)))
    losses = -chosen - lam * F.logsigmoid(log_odds)
    return losses, lam * chosen.detach(), lam * rejected.detach()


def kto_losses(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([examples] losses, rewards) of KTO; `kl` is the (detached, clamped >= 0) batch KL estimate z.

    With r = logps - ref_logps:
      desirable:   w_d * (1 - sigmoid(beta * (r - z)))
      undesirable: w_u * (1 - sigmoid(beta * (z - r)))
    rewards = beta * r, detached.
    """
    ratio = logps.float() - ref_logps.float()
    desirable = desirable.bool()
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad), beta * ratio.detach()


def kto_kl_estimate(mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor) -> torch.Tensor:
    """z = max(0, mean(logps - ref_logps)) over prompts paired with other examples' completions, detached."""
    return (mismatched_logps.float() - ref_mismatched_logps.float()).mean().clamp(min=0).detach()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / sum(mask)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over masked positions (the mean is kept when shift_mean is false)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), [batch, steps], by generalized advantage estimation.

    delta_t = r_t + gamma * V_{t+1} - V_t (V past the last real step is 0);
    A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.  Positions where mask is 0 get 0.
    """
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def ppo_policy_losses(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """([tokens] losses, [tokens] clipped flags) of the PPO clipped surrogate.

    ratio = exp(logps - old_logps); loss = max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)).
    """
    ratio = torch.exp(logps.float() - old_logps.float())
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def ppo_value_losses(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """([tokens] losses, [tokens] clipped flags) of the clipped value loss.

    v_clip = old + clamp(v - old, -clip, clip); loss = 0.5 * max((v - R)^2, (v_clip - R)^2).
    """
    values = values.float()
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped_loss, clipped_loss), (clipped_loss > unclipped_loss).float()
