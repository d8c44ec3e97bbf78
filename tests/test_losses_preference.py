"""Preference and RL losses against naive formulas and against TRL's trainers on identical inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tunesmith.train import losses

torch.manual_seed(0)
B = 6


def _logps(scale=20.0):
    return -torch.rand(B, dtype=torch.float64) * scale


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_pairwise_reward_loss_naive():
    chosen, rejected = torch.randn(B), torch.randn(B)
    expected = [-math.log(_sigmoid(c - r)) for c, r in zip(chosen.tolist(), rejected.tolist())]
    assert losses.pairwise_reward_loss(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "hinge"])
def test_dpo_losses_naive(kind):
    pc, pr, rc, rr = _logps(), _logps(), _logps(), _logps()
    beta, eps = 0.3, (0.1 if kind == "sigmoid" else 0.0)
    got, chosen_rewards, _ = losses.dpo_losses(pc, pr, rc, rr, beta, kind, eps)
    for i in range(B):
        h = float((pc[i] - rc[i]) - (pr[i] - rr[i]))
        naive = {
            "sigmoid": -(1 - eps) * math.log(_sigmoid(beta * h)) - eps * math.log(_sigmoid(-beta * h)),
            "ipo": (h - 1 / (2 * beta)) ** 2,
            "hinge": max(0.0, 1 - beta * h),
        }[kind]
        assert float(got[i]) == pytest.approx(naive, rel=1e-5, abs=1e-6)
        # abs too: the rewards are float32, and pc - rc can nearly cancel (rel error then far above 1e-5)
        assert float(chosen_rewards[i]) == pytest.approx(beta * float(pc[i] - rc[i]), rel=1e-5, abs=1e-6)


def test_dpo_sigmoid_is_ln2_when_policy_equals_reference():
    pc, pr = _logps(), _logps()
    got, _, _ = losses.dpo_losses(pc, pr, pc.clone(), pr.clone(), beta=0.1)
    assert got.tolist() == pytest.approx([math.log(2)] * B)


def test_simpo_and_orpo_naive():
    c, r = -torch.rand(B, dtype=torch.float64) * 3, -torch.rand(B, dtype=torch.float64) * 3
    simpo, _, _ = losses.simpo_losses(c, r, beta=2.0, gamma=0.5)
    orpo, _, _ = losses.orpo_losses(c, r, lam=0.2)
    for i in range(B):
        x, y = float(c[i]), float(r[i])
        assert float(simpo[i]) == pytest.approx(-math.log(_sigmoid(2.0 * (x - y) - 0.5)), rel=1e-5)
        odds = lambda lp: math.exp(lp) / (1 - math.exp(lp))  # noqa: E731
        naive = -x - 0.2 * math.log(_sigmoid(math.log(odds(x)) - math.log(odds(y))))
        assert float(orpo[i]) == pytest.approx(naive, rel=1e-5)


def test_kto_naive():
    logps, ref = _logps(), _logps()
    desirable = torch.tensor([True, False, True, True, False, False])
    kl = torch.tensor(0.7, dtype=torch.float64)
    got, _ = losses.kto_losses(logps, ref, desirable, kl, beta=0.2, desirable_weight=1.5, undesirable_weight=0.5)
    for i in range(B):
        r = float(logps[i] - ref[i])
        naive = 1.5 * (1 - _sigmoid(0.2 * (r - 0.7))) if desirable[i] else 0.5 * (1 - _sigmoid(0.2 * (0.7 - r)))
        assert float(got[i]) == pytest.approx(naive, rel=1e-6)
    assert float(losses.kto_kl_estimate(ref, logps)) == pytest.approx(max(0.0, float((ref - logps).mean())), rel=1e-6)


# --- TRL, called on the same numbers -------------------------------------------------------------------------


def _per_token(total: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs on the mask's positions that sum to `total` row by row."""
    weights = torch.rand(mask.shape, dtype=torch.float64) * mask
    return weights / weights.sum(-1, keepdim=True) * total.unsqueeze(-1)


def _trl_outputs(per_token):
    zeros = torch.zeros_like(per_token)
    return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def _trl_self(**attrs):
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    base = dict(model=SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False,
                precompute_ref_logps=True, ld_alpha=None, use_weighting=False, _total_train_tokens=0, _tp_size=1,
                _metrics=defaultdict(lambda: defaultdict(list)))
    return SimpleNamespace(**{**base, **attrs})


@pytest.mark.parametrize("kind", ["sigmoid", "ipo", "hinge"])
def test_dpo_matches_trl(kind):
    from trl import DPOTrainer

    length = 9
    mask = (torch.rand(2 * B, length) > 0.3).long()
    mask[:, 0] = 0
    mask[:, 1] = 1
    sums = torch.cat([_logps(), _logps()])
    ref = torch.cat([_logps(), _logps()])
    per_token = _per_token(sums, mask[:, 1:])
    inputs = {"input_ids": torch.zeros(2 * B, length, dtype=torch.long), "attention_mask": torch.ones_like(mask),
              "completion_mask": mask, "ref_chosen_logps": ref[:B], "ref_rejected_logps": ref[B:]}
    trl_self = _trl_self(beta=0.2, loss_types=[kind], loss_weights=[1.0], f_divergence_type="reverse_kl",
                         label_smoothing=0.0)
    theirs = DPOTrainer._compute_loss(trl_self, lambda **kw: _trl_outputs(per_token), inputs, False)
    logps = per_token.sum(-1)
    ref_logps = ref
    if kind == "ipo":  # as our dpo stage does: length-averaged log-probs for IPO
        lengths = mask[:, 1:].sum(-1)
        logps, ref_logps = logps / lengths, ref / lengths
    ours, chosen_rewards, _ = losses.dpo_losses(logps[:B], logps[B:], ref_logps[:B], ref_logps[B:], 0.2, kind)
    assert float(ours.mean()) == pytest.approx(float(theirs), rel=1e-6)
    if kind != "ipo":
        # TRL logs the metric in float32: a mean near zero needs an absolute bound beside the relative one
        assert float(chosen_rewards.mean()) == pytest.approx(trl_self._metrics["train"]["rewards/chosen"][0],
                                                             rel=1e-6, abs=1e-6)


def test_simpo_matches_trl_cpo():
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    c, r = -torch.rand(B, dtype=torch.float64) * 3, -torch.rand(B, dtype=torch.float64) * 3
    trl_self = _trl_self(alpha=0.0, loss_type="simpo", simpo_gamma=0.5, beta=2.0, label_smoothing=0.0)
    theirs, their_chosen, _ = CPOTrainer.cpo_loss(trl_self, c, r)
    ours, our_chosen, _ = losses.simpo_losses(c, r, beta=2.0, gamma=0.5)
    torch.testing.assert_close(ours, theirs.to(ours.dtype))
    torch.testing.assert_close(our_chosen, their_chosen.to(our_chosen.dtype))


def test_orpo_matches_trl():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    c, r = -torch.rand(B, dtype=torch.float64) * 3, -torch.rand(B, dtype=torch.float64) * 3
    odds_term, _, _, _, _ = ORPOTrainer.odds_ratio_loss(_trl_self(beta=0.2), c, r)
    ours, _, _ = losses.orpo_losses(c, r, lam=0.2)
    # TRL: loss = NLL(chosen) - mean(beta * log sigmoid(log odds)); ours per pair: -avg_chosen - that term
    torch.testing.assert_close(ours, (-c - odds_term).to(ours.dtype))


def test_kto_matches_trl():
    from trl import KTOTrainer

    length = 7
    labels = torch.tensor([True, False, True, True, False, False])
    mask = torch.ones(B, length, dtype=torch.long)
    mask[:, :2] = 0
    sums, ref, kl_logps, ref_kl = _logps(), _logps(), _logps(5), _logps(5)
    per_token = _per_token(sums, mask[:, 1:])
    batch = {"input_ids": torch.zeros(B, length, dtype=torch.long), "attention_mask": torch.ones_like(mask),
             "completion_mask": mask, "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    trl_self = _trl_self(beta=0.3, loss_type="kto", calculate_KL=True, desirable_weight=1.3, undesirable_weight=0.7,
                         _compute_kl_logps=lambda model, batch: kl_logps)
    result = KTOTrainer._compute_loss(trl_self, lambda **kw: _trl_outputs(per_token), batch, False)
    theirs = result[0] if isinstance(result, tuple) else result
    kl = losses.kto_kl_estimate(kl_logps, ref_kl)
    ours, _ = losses.kto_losses(per_token.sum(-1), ref, labels, kl, 0.3, 1.3, 0.7)
    assert float(ours.mean()) == pytest.approx(float(theirs), rel=1e-6)
    assert float(kl) == pytest.approx(trl_self._metrics["train"]["kl"][0], rel=1e-6)


# --- PPO pieces against loops written out by hand ------------------------------------------------------------


def test_gae_matches_naive_loop():
    steps = 5
    rewards, values = torch.randn(3, steps), torch.randn(3, steps)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    gamma, lam = 0.9, 0.8
    adv, returns = losses.gae_advantages(rewards, values, mask, gamma, lam)
    for b in range(3):
        n = int(mask[b].sum())
        for t in range(n):
            naive = 0.0
            for k in range(t, n):
                next_value = float(values[b, k + 1]) if k + 1 < n else 0.0
                delta = float(rewards[b, k]) + gamma * next_value - float(values[b, k])
                naive += (gamma * lam) ** (k - t) * delta
            assert float(adv[b, t]) == pytest.approx(naive, rel=1e-4, abs=1e-5)
            assert float(returns[b, t]) == pytest.approx(naive + float(values[b, t]), rel=1e-4, abs=1e-5)
        assert adv[b, n:].abs().sum() == 0


def test_ppo_policy_and_value_losses_naive():
    logps, old, adv = torch.randn(20) * 0.3, torch.randn(20) * 0.3, torch.randn(20)
    got, clipped = losses.ppo_policy_losses(logps, old, adv, clip=0.2)
    for i in range(20):
        ratio = math.exp(float(logps[i] - old[i]))
        a = float(adv[i])
        naive = max(-a * ratio, -a * min(max(ratio, 0.8), 1.2))
        assert float(got[i]) == pytest.approx(naive, rel=1e-5, abs=1e-6)
        assert bool(clipped[i]) == (-a * min(max(ratio, 0.8), 1.2) > -a * ratio)
    values, old_values, returns = torch.randn(20), torch.randn(20), torch.randn(20)
    got, _ = losses.ppo_value_losses(values, old_values, returns, clip=0.3)
    for i in range(20):
        v, o, r = float(values[i]), float(old_values[i]), float(returns[i])
        v_clip = o + min(max(v - o, -0.3), 0.3)
        assert float(got[i]) == pytest.approx(0.5 * max((v - r) ** 2, (v_clip - r) ** 2), rel=1e-5)


def test_whiten_naive():
    values = torch.randn(4, 6)
    mask = (torch.rand(4, 6) > 0.3).float()
    picked = values[mask.bool()]
    mean, std = float(picked.mean()), float(picked.std(unbiased=False))
    got = losses.whiten(values, mask)
    torch.testing.assert_close(got[mask.bool()], (picked - mean) / std, rtol=1e-4, atol=1e-4)
