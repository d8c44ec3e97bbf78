"""The one training loop, on accelerate.

Gradient accumulation normalises by the target tokens of the whole accumulation window (all micro-batches,
all processes), so batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same loss and gradients.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tunesmith.config.schema import TrainConfig
from tunesmith.train.batches import BatchStream, eval_batches
from tunesmith.train.checkpoint import save_checkpoint
from tunesmith.train.metrics import MetricsLog
from tunesmith.train.optim import build_optimizer, build_scheduler


@dataclass
class StepResult:
    loss: torch.Tensor  # mean loss over the window's target tokens (a tensor: no host sync until logged)
    units: int  # target tokens (token stages) or pairs (preference stages) in the window, all processes
    input_tokens: int
    grad_norm: torch.Tensor | None
    metrics: dict[str, torch.Tensor]  # the stage's extra metrics, averaged over the window's units


class Trainer:
    def __init__(self, accelerator, model, stage, train: TrainConfig, stream: BatchStream, val, run_dir):
        self.accelerator = accelerator
        self.stage = stage
        self.train_config = train
        self.stream = stream
        self.val = val
        self.run_dir = run_dir
        self.total_steps = total_steps(train, stream.batches_per_epoch)
        optimizer = build_optimizer(model, train)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = build_scheduler(self.optimizer, train, self.total_steps)
        self.metrics = MetricsLog(run_dir, enabled=accelerator.is_main_process)
        self.step = 0
        self.tokens_seen = 0

    def run(self) -> None:
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step",
                   disable=not self.accelerator.is_main_process)
        started, tokens_at_start = time.perf_counter(), self.tokens_seen
        while self.step < self.total_steps:
            result = self.train_step()
            self.step += 1
            self.tokens_seen += result.input_tokens
            bar.update(1)
            if self.step % self.train_config.logging_steps == 0 or self.step == self.total_steps:
                speed = (self.tokens_seen - tokens_at_start) / max(time.perf_counter() - started, 1e-9)
                record = self.log_step(result, speed)
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{speed:.0f}")
            if self._due(self.train_config.eval_steps) and self.val:
                self.evaluate()
            if self._due(self.train_config.save_steps) and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        if self.val:
            self.evaluate()

    def train_step(self) -> StepResult:
        window = [self.stream.next_batch() for _ in range(self.train_config.grad_accum)]
        local_units = sum(self.stage.count_units(batch) for batch in window)
        # One reduction per step, of a number known on the host before any forward pass.
        global_units = int(self.accelerator.reduce(torch.tensor(local_units, device=self.accelerator.device),
                                                     reduction="sum"))
        scale = self.accelerator.num_processes / max(global_units, 1)  # DDP averages gradients over ranks
        loss_sum = torch.zeros((), device=self.accelerator.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(window):
            batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
            syncing = index == len(window) - 1
            with self.accelerator.no_sync(self.model) if not syncing else nullcontext():
                with self.accelerator.autocast():
                    batch_loss, batch_metrics = self.stage.loss(self.model, batch)
                self.accelerator.backward(batch_loss * scale)
            loss_sum += batch_loss.detach()
            for key, value in batch_metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + value.detach()
        grad_norm = None
        if self.train_config.max_grad_norm:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.train_config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        per_unit = {key: self.accelerator.reduce(value, reduction="sum") / max(global_units, 1)
                    for key, value in {"loss": loss_sum, **metric_sums}.items()}
        input_tokens = sum(int(batch["attention_mask"].sum()) for batch in window)
        return StepResult(per_unit.pop("loss"), global_units, input_tokens, grad_norm, per_unit)

    def log_step(self, result: StepResult, tokens_per_s: float) -> dict:
        record = {
            "step": self.step,
            "epoch": round(self.stream.position / self.stream.batches_per_epoch, 4),
            "loss": float(result.loss),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens": self.tokens_seen,
            "units": result.units,
            "tokens_per_s": round(tokens_per_s, 1),
        }
        if result.grad_norm is not None:
            record["grad_norm"] = float(result.grad_norm)
        record.update({key: float(value) for key, value in result.metrics.items()})
        self.metrics.write(record)
        return record

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        total, count = torch.zeros((), device=self.accelerator.device), 0
        for batch in eval_batches(self.val, self.stream.batch_size, self.stream.collate):
            count += self.stage.count_units(batch)
            batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
            with self.accelerator.autocast():
                total += self.stage.loss(self.model, batch)[0].detach()
        self.model.train()
        eval_loss = float(total) / max(count, 1)
        self.metrics.write({"step": self.step, "eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50))})
        return eval_loss

    def save_checkpoint(self) -> None:
        if self.accelerator.is_main_process:
            state = {"stream_position": self.stream.position, "tokens_seen": self.tokens_seen}
            save_checkpoint(self.run_dir, self.step, self.accelerator.unwrap_model(self.model),
                            self.optimizer, self.scheduler, state)
        self.accelerator.wait_for_everyone()

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0


def total_steps(train: TrainConfig, batches_per_epoch: int) -> int:
    if train.max_steps:
        return train.max_steps
    return max(1, math.ceil(train.epochs * batches_per_epoch / train.grad_accum))

