"""Losses as pure tensor functions, each with the naive formula it equals."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_i -log softmax(logits_i)[targets_i], computed in float32.

    Summed rather than averaged so that the loop can normalise by the target tokens of a whole
    gradient-accumulation window, not of one micro-batch.
    """
    return F.cross_entropy(logits.float(), targets, reduction="sum")
