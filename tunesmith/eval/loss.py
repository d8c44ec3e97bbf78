"""Validation loss and perplexity: the training stage's own loss, summed over target tokens, averaged once."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from tunesmith.train.batches import eval_batches


@torch.no_grad()
def evaluate_loss(model, stage, samples: list, pad_id: int, batch_size: int = 8) -> dict:
    """Mean loss per target token over all `samples` (token-weighted, so batching does not change it)."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    total, units = 0.0, 0
    batches = eval_batches(samples, batch_size, lambda chunk: stage.collate(chunk, pad_id))
    for batch in tqdm(batches, total=math.ceil(len(samples) / batch_size), desc="loss", unit="batch"):
        units += stage.count_units(batch)
        batch = {key: value.to(device) for key, value in batch.items()}
        total += float(stage.loss(model, batch)[0])
    loss = total / max(units, 1)
    return {"loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50)), 4), "tokens": units,
            "samples": len(samples), "seconds": round(time.perf_counter() - started, 2)}
