"""Validation loss: the training stage's own loss (and its extra metrics), summed over its units (target
tokens, pairs), averaged once; with perplexity for token stages."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from tunesmith.train.batches import eval_batches
from tunesmith.train.evaluation import evaluate_stage


@torch.no_grad()
def evaluate_loss(model, stage, samples: list, pad_id: int, batch_size: int = 8) -> dict:
    """Mean loss per unit (target token, pair) over all `samples` (unit-weighted, so batching does not change
    it), the stage's extra metrics likewise, and perplexity where the stage is a token stage."""
    started = time.perf_counter()
    batches = eval_batches(samples, batch_size, lambda chunk: stage.collate(chunk, pad_id))
    batches = tqdm(batches, total=math.ceil(len(samples) / batch_size), desc="loss", unit="batch")
    record, units = evaluate_stage(stage, model, batches, next(model.parameters()).device, prefix="")
    metrics = {key: round(value, 6) for key, value in record.items()}
    return {**metrics, "tokens": units, "samples": len(samples), "seconds": round(time.perf_counter() - started, 2)}
