"""PPO rollouts: replies sampled from the policy, scored by the reward model, turned into advantages.

Everything here runs without gradients; the result is a batch of tensors the PPO epochs train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.data.collator import pad_batch
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.losses import gae_advantages, masked_mean, whiten
from tunesmith.train.stages.preference import encode_reply
from tunesmith.train.stages.rm import last_reply_values


def reply_forward(network, batch: dict, prompt_len: int, temperature: float, value_head=None):
    """(logits [B, R, V] / temperature, values [B, R] or None) at the positions that predict the reply."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    hidden = network.get_decoder()(**inputs, use_cache=False).last_hidden_state[:, prompt_len - 1 : -1]
    logits = network.get_output_embeddings()(hidden).float() / temperature
    values = value_head(hidden) if value_head is not None else None
    return logits, values


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.gather(logits.log_softmax(-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def generate(policy, batch: dict, ppo, stop_ids: list[int], pad_id: int) -> dict:
    """Sample replies; the batch of prompt + reply with masks and position ids (left-padded prompts)."""
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
    sequences = policy.backbone.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=ppo.sampling.temperature,
        top_p=ppo.sampling.top_p, top_k=ppo.sampling.top_k, max_new_tokens=ppo.sampling.max_new_tokens,
        eos_token_id=stop_ids, pad_token_id=pad_id,
    )
    reply = sequences[:, prompt_ids.shape[1]:]
    is_stop = torch.isin(reply, torch.tensor(stop_ids, device=reply.device))
    # A reply runs through its first stop token; what generate pads after it is not part of the reply.
    after_stop = (is_stop.cumsum(-1) - is_stop.long()) > 0
    reply_mask = (~after_stop).long()
    reply = torch.where(after_stop, torch.full_like(reply, pad_id), reply)
    attention_mask = torch.cat([prompt_mask, reply_mask], dim=1)
    return {
        "input_ids": torch.cat([prompt_ids, reply], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "reply": reply,
        "reply_mask": reply_mask.float(),
    }


@dataclass
class Scorer:
    """The reward model and the template it was trained with: replies are decoded with the policy's tokenizer
    and re-rendered exactly as the rm stage rendered its training pairs."""

    model: object
    template: object
    policy_tokenizer: object

    @torch.no_grad()
    def __call__(self, prompts: list[tuple], reply: torch.Tensor, reply_mask: torch.Tensor) -> torch.Tensor:
        """[batch] scores of the replies (token ids, [batch, steps], with their mask) to the prompts."""
        texts = [self.policy_tokenizer.decode(ids[m.bool()], skip_special_tokens=True).strip()
                 for ids, m in zip(reply, reply_mask)]
        device = reply.device
        samples = []
        for (messages, tools), text in zip(prompts, texts):
            ids, start = encode_reply(self.template, messages, {"role": "assistant", "content": text}, tools)
            samples.append(Encoded(ids, [IGNORE] * start + ids[start:]))
        pad_id = self.template.tokenizer.pad_token_id
        batch = {key: value.to(device) for key, value in pad_batch(samples, pad_id).items()}
        return last_reply_values(self.model, batch)


class RewardNormalizer:
    """Scores to rewards: unchanged, or shifted and scaled by the batch's or a running mean and std."""

    def __init__(self, mode: str, clip: float | None):
        self.mode, self.clip = mode, clip
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if self.mode == "batch":
            scores = (scores - scores.mean()) / (scores.std(unbiased=False) + 1e-8)
        elif self.mode == "running":
            self._update(scores)
            scores = (scores - self.mean) / ((self.m2 / max(self.count, 1)) ** 0.5 + 1e-8)
        return scores.clamp(-self.clip, self.clip) if self.clip else scores

    def state(self) -> dict:
        """The running statistics, for a checkpoint."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]

    def _update(self, scores: torch.Tensor) -> None:  # Chan et al.'s parallel mean / variance update
        n, mean = scores.numel(), float(scores.mean())
        m2 = float(((scores - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total


def token_rewards(scores, logps, ref_logps, mask, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token rewards: -kl_coef * KL estimate, plus the score on each reply's last token; per-token KL)."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores
    return rewards, kl


def advantages(rewards, values, mask, ppo) -> tuple[torch.Tensor, torch.Tensor]:
    adv, returns = gae_advantages(rewards, values, mask, ppo.gamma, ppo.lam)
    if ppo.whiten_advantages:
        adv = whiten(adv, mask) * mask
    return adv, returns


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy of the sampling distribution over the reply tokens."""
    logp = logits.log_softmax(-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)
