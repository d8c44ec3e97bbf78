"""A stage's loss and extra metrics over validation batches, summed over their units (target tokens, pairs)
and divided once, so batching does not change them; with perplexity for token stages. The loop's eval steps
and `tunesmith eval --task loss` both report through here."""

from __future__ import annotations

import math
from contextlib import nullcontext


def evaluate_stage(stage, model, batches, device, autocast=nullcontext, prefix: str = "eval_"
                   ) -> tuple[dict[str, float], int]:
    """(eval_metrics of the mean loss and metrics over `batches`, the number of units). Call under no_grad."""
    sums, units = {}, 0
    for batch in batches:
        units += stage.count_units(batch)
        batch = {key: value.to(device) for key, value in batch.items()}
        with autocast():
            loss, extras = stage.loss(model, batch)
        for key, value in {"loss": loss, **extras}.items():
            sums[key] = sums.get(key, 0.0) + float(value)  # summed in float64: many batches lose no precision
    means = {key: value / max(units, 1) for key, value in sums.items()}
    return eval_metrics(stage, means.pop("loss", 0.0), means, prefix), units


def eval_metrics(stage, loss: float, extras: dict[str, float], prefix: str = "eval_") -> dict[str, float]:
    """What an evaluation reports: the mean loss and the stage's own metrics (reward accuracy, margins ...),
    each under `prefix`; plus perplexity, only where the loss is a mean per-token cross entropy (pt, sft):
    the exp of a preference loss (-log sigmoid of a margin) measures nothing."""
    record = {f"{prefix}loss": loss, **{f"{prefix}{key}": value for key, value in extras.items()}}
    if stage.reports_perplexity:
        record["perplexity"] = math.exp(min(loss, 50))  # capped: an exploding loss still logs a finite number
    return record
