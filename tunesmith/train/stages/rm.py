"""Reward model: a scalar value head on the causal LM, trained on preference pairs by
-log sigmoid(r_chosen - r_rejected), with r the value at the last token of each reply."""

from __future__ import annotations

import torch

from tunesmith.data.template import IGNORE
from tunesmith.model.value_head import ValueHeadModel
from tunesmith.train.losses import pairwise_reward_loss
from tunesmith.train.stages.base import Stage
from tunesmith.train.stages.preference import collate_pairs, count_truncated, encode_pair


class RmStage(Stage):
    name = "rm"
    record_kind = "preference"

    def encode(self, record, template, data):
        return encode_pair(template, record, data.max_length)

    def collate(self, samples, pad_id):
        return collate_pairs(samples, pad_id)

    def count_units(self, batch):
        return batch["input_ids"].shape[0] // 2

    def prepare(self, model, data, config, device):
        truncated = count_truncated(data.train + data.val)
        if truncated:
            print(f"rm: {truncated} prompts truncated from the left to fit data.max_length")
        return ValueHeadModel(model)

    def loss(self, model, batch):
        rewards = last_reply_values(model, batch)
        chosen, rejected = rewards.chunk(2)
        margin = (chosen - rejected).detach()
        metrics = {
            "rewards/chosen": chosen.detach().sum(),
            "rewards/rejected": rejected.detach().sum(),
            "accuracy": (margin > 0).float().sum(),
            "margin": margin.sum(),
        }
        return pairwise_reward_loss(chosen, rejected).sum(), metrics


def last_reply_values(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[rows] the value head's output at each row's last labelled token (the end of the reply)."""
    labelled = batch["labels"] != IGNORE
    positions = torch.arange(labelled.shape[1], device=labelled.device)
    last = torch.where(labelled, positions, -1).max(-1).values
    # Through the model's own forward, so a distributed wrapper sees the pass and syncs the gradients.
    values = model(**{key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch})
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, last].float()
