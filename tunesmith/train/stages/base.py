"""What a stage is: how to encode a record, and the loss of a batch. Stages never look at the method."""

from __future__ import annotations

import torch

from tunesmith.train.forward import target_logits
from tunesmith.train.losses import cross_entropy_sum


class TokenStage:
    """Stages trained by next-token cross entropy on labelled tokens (pt, sft)."""

    name = ""
    record_kind = "conversation"  # what data/formats should produce for this stage: conversation | text

    def encode(self, record, template, data):
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed token loss of the batch; the loop divides by the window's target-token count."""
        logits, targets = target_logits(model, batch)
        return cross_entropy_sum(logits, targets)

    @staticmethod
    def count_targets(batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())
