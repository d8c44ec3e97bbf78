"""Validation loss: the training stage's own loss (and its extra metrics), summed over its units (target
tokens, pairs), averaged once; with perplexity for token stages."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from tunesmith.train.batches import eval_batches
from tunesmith.train.metrics import eval_metrics


@torch.no_grad()
def evaluate_loss(model, stage, samples: list, pad_id: int, batch_size: int = 8) -> dict:
    """Mean loss per unit (target token, pair) over all `samples` (unit-weighted, so batching does not change
    it), the stage's extra metrics likewise, and perplexity where the stage is a token stage."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    sums, units = {"loss": 0.0}, 0
    batches = eval_batches(samples, batch_size, lambda chunk: stage.collate(chunk, pad_id))
    for batch in tqdm(batches, total=math.ceil(len(samples) / batch_size), desc="loss", unit="batch"):
        units += stage.count_units(batch)
        batch = {key: value.to(device) for key, value in batch.items()}
        loss, extras = stage.loss(model, batch)
        for key, value in {"loss": loss, **extras}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    means = {key: value / max(units, 1) for key, value in sums.items()}
    loss = means.pop("loss")
    metrics = {key: round(value, 6) for key, value in eval_metrics(stage, loss, means, prefix="").items()}
    return {**metrics, "tokens": units, "samples": len(samples), "seconds": round(time.perf_counter() - started, 2)}
