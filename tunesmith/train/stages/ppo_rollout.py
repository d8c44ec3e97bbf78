"""PPO rollouts: replies sampled from the policy, scored by the reward model, turned into advantages.

Everything here runs without gradients; the result is a batch of tensors the PPO epochs train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.data.collator import pad_batch
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.losses import gae_advantages, whiten
from tunesmith.train.stages.grpo_rollout import sample_completions
from tunesmith.train.stages.preference import encode_reply
from tunesmith.train.stages.rm import last_reply_values
from tunesmith.train.token_logps import chunked_logps, softcap_of


def reply_forward(network, batch: dict, temperature: float, value_head=None, with_entropy: bool = False) -> dict:
    """{"logps": [B, R] log-probs at `temperature` of the reply tokens (the batch's last R columns), "entropy"
    with `with_entropy`, "values" [B, R] with a value head}; the head's logits per chunk (train/token_logps.py)."""
    reply = batch["reply"]
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    hidden = network.get_decoder()(**inputs, use_cache=False).last_hidden_state[:, -reply.shape[1] - 1:-1]
    scores = chunked_logps(network.get_output_embeddings(), hidden.reshape(-1, hidden.shape[-1]), reply.reshape(-1),
                           softcap_of(network), temperature=temperature, with_entropy=with_entropy)
    out = dict(zip(("logps", "entropy"), scores)) if with_entropy else {"logps": scores}
    out = {key: value.view(reply.shape) for key, value in out.items()}
    if value_head is not None:
        out["values"] = value_head(hidden)
    return out


def generate(policy, tokenizer, batch: dict, ppo, stop_ids: list[int], seed: int, step: int | str) -> dict:
    """Sample one reply per prompt, each from its own random stream (see grpo_rollout); the batch of prompt +
    reply with masks and position ids (left-padded prompts, right-padded replies that end at their stop token)."""
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]
    results = sample_completions(policy, tokenizer, prompts, batch["index"], ppo.sampling, 1, seed, step, stop_ids)
    width = max(1, max(len(result.token_ids) for result in results))
    pad_id = tokenizer.pad_token_id or 0
    reply = torch.full((len(results), width), pad_id, dtype=torch.long)
    reply_mask = torch.zeros((len(results), width), dtype=torch.long)
    for row, result in enumerate(results):
        reply[row, :len(result.token_ids)] = torch.tensor(result.token_ids, dtype=torch.long)
        reply_mask[row, :len(result.token_ids)] = 1
    reply, reply_mask = reply.to(prompt_ids.device), reply_mask.to(prompt_ids.device)
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
