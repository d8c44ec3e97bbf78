"""Optimizer and learning-rate schedule from the train config."""

from __future__ import annotations

import math

import torch

from tunesmith.config.schema import TrainConfig


def build_optimizer(model, train: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases and norms are not decayed
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in params) and torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=train.lr, fused=fused or None)


def build_scheduler(optimizer, train: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(train.warmup_ratio * total_steps)
    return get_scheduler(train.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
