"""Reward model: a scalar value head on the causal LM, trained on preference pairs by
-log sigmoid(r_chosen - r_rejected), with r the value at the last token of each reply. A pair's images are in
its shared prompt: both rows carry them, as in dpo."""

from __future__ import annotations

import torch

from tunesmith.data.template import IGNORE
from tunesmith.model.value_head import ValueHeadModel, new_head
from tunesmith.train.forward import MEDIA_KEYS, hidden_states
from tunesmith.train.losses import pairwise_reward_loss
from tunesmith.train.stages.preference import PairStage


class RmStage(PairStage):
    name = "rm"
    takes_images = True

    def prepare(self, model, data, config, device):
        self.report_truncated(data)
        # No bias: the pairwise loss sees only reward differences, so a bias gets a gradient of float noise, which
        # AdamW turns into steps of +-lr that shift every reward alike, differently with every batch split.
        hidden_size = model.config.get_text_config().hidden_size  # a vision-language model's is its text part's
        return RewardModel(model, new_head(hidden_size, bias=False))

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


class RewardModel(ValueHeadModel):
    """The value-head model as rm trains it: its hidden states from the decoder's one forward (train/forward.py),
    which also runs a vision-language model's tower on the batch's pixels."""

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return hidden_states(self.backbone, batch)


def last_reply_values(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[rows] the value head's output at each row's last labelled token (the end of the reply)."""
    labelled = batch["labels"] != IGNORE
    positions = torch.arange(labelled.shape[1], device=labelled.device)
    last = torch.where(labelled, positions, -1).max(-1).values
    # Through the model's own forward, so a distributed wrapper sees the pass and syncs the gradients.
    inputs = ("input_ids", "attention_mask", "position_ids", *MEDIA_KEYS)
    values = model(**{key: batch[key] for key in inputs if key in batch})
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, last].float()
