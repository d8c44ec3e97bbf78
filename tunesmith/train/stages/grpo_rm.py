"""A finished rm run folder as a GRPO reward function: its value head scores each completion, rendered with
the rm run's own template (the same scorer PPO uses)."""

from __future__ import annotations

from pathlib import Path

import torch


def rm_reward_loader(model_config):
    """folder -> reward function; the rm loads on the CPU and moves to the policy's device in `to`."""

    def load(folder: Path):
        from tunesmith.model.load import load_tokenizer
        from tunesmith.train.stages.ppo import load_reward_scorer

        return RmReward(load_reward_scorer(folder, load_tokenizer(model_config), "cpu"))

    return load


class RmReward:
    def __init__(self, scorer):
        self.scorer = scorer

    def to(self, device) -> "RmReward":
        self.scorer.model.to(device)
        return self

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        width = max(1, max(len(ids) for ids in completion_ids))
        reply = torch.zeros((len(completion_ids), width), dtype=torch.long)
        mask = torch.zeros((len(completion_ids), width))
        for row, ids in enumerate(completion_ids):
            reply[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        device = next(self.scorer.model.parameters()).device
        return self.scorer([(prompt, None) for prompt in prompts], reply.to(device), mask.to(device)).tolist()
