"""Batches of encoded samples as padded tensors (right padding; labels -100 on padding)."""

from __future__ import annotations

import torch

from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE


def pad_batch(samples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
