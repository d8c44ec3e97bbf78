"""The one training loop, on accelerate.

Gradient accumulation normalises by the target tokens of the whole accumulation window (all micro-batches,
all processes), so batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same loss and gradients.
The loop never waits for the device inside a step: a step's metrics are read on the host only once the next
step has been queued.

Online stages (ppo, grpo) run here too: the stage turns each step's window of prompt batches into the batches
it trains on (generating rollouts) and says how many optimizer updates a window gives.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tunesmith.config.schema import TrainConfig
from tunesmith.dist.collectives import global_sums, global_tensor_sum, gradient_scale
from tunesmith.dist.deepspeed import uses_deepspeed
from tunesmith.errors import TunesmithError
from tunesmith.model.moe import RouterLoss
from tunesmith.train.batches import BatchStream
from tunesmith.train.checkpoint import load_checkpoint, load_engine_checkpoint, save_checkpoint, save_engine_checkpoint
from tunesmith.train.metrics import MetricsLog
from tunesmith.train.optim import build_optimizer, build_scheduler, follows_eval_loss
from tunesmith.train.rng import gather_rng_states


@dataclass
class StepResult:
    loss: torch.Tensor  # mean loss over the window's target tokens (a tensor: no host sync until logged)
    units: int  # target tokens (token stages) or pairs (preference stages) in the window, all processes
    input_tokens: int  # real input tokens in the window, all processes
    grad_norm: torch.Tensor | None
    metrics: dict[str, torch.Tensor]  # the stage's extra metrics, averaged over the window's units
    lr: float  # the learning rate this step used
    window_stats: dict[str, float]  # what the stage reports about the window itself (rewards of its rollouts)


class Trainer:
    def __init__(self, accelerator, model, stage, train: TrainConfig, stream: BatchStream, val, run_dir,
                 sinks: list | None = None):
        self.accelerator = accelerator
        self.stage = stage
        self.train_config = train
        self.stream = stream
        self.val = val
        self.run_dir = Path(run_dir)
        self.total_steps = total_steps(train, stream.batches_per_epoch)
        stage.accelerator = accelerator  # stages that take statistics over all processes' rows need it
        if train.gradient_checkpointing:
            enable_activation_checkpointing(model, offload=train.gradient_checkpointing == "offload")
        if train.neftune_alpha:
            from tunesmith.train.noise import add_neftune_noise

            add_neftune_noise(model, train.neftune_alpha)
        optimizer = build_optimizer(model, train)
        self.router_loss = RouterLoss(model, train.router_aux_loss_coef)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = build_scheduler(self.optimizer, train, self.total_steps * stage.updates_per_window)
        self.metrics = MetricsLog(run_dir, enabled=accelerator.is_main_process, sinks=sinks)
        self.step = 0
        self.tokens_seen = 0
        self.best_eval_loss = math.inf  # of the stage's eval metric, negated where higher is better
        self.evals_without_improvement = 0
        self._pending_log: tuple | None = None
        self._clock = (time.perf_counter(), 0)  # (time, tokens_seen) when this process started training

    def resume(self, checkpoint: Path) -> None:
        """Continue from `checkpoint`: weights, optimizer, scheduler, RNG, data position and counters."""
        if uses_deepspeed(self.accelerator):
            state = load_engine_checkpoint(self.accelerator, checkpoint, self.model, self.scheduler)
        else:
            state = load_checkpoint(checkpoint, self.accelerator.unwrap_model(self.model), self.optimizer,
                                    self.scheduler, self.accelerator.scaler, rank=self.accelerator.process_index)
        self.step = state["step"]
        self.stream.position = state["stream_position"]
        self.tokens_seen = state["tokens_seen"]
        self.best_eval_loss = state.get("best_eval_loss", math.inf)
        self.evals_without_improvement = state.get("evals_without_improvement", 0)
        self.stage.load_state_dict(state.get("stage", {}))
        self._clock = (time.perf_counter(), self.tokens_seen)
        self.metrics.truncate_after(self.step)
        self.accelerator.print(f"resumed from {checkpoint} at step {self.step}")

    def run(self) -> None:
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step",
                   disable=not self.accelerator.is_main_process)
        evaluated_last = stopped = False
        while self.step < self.total_steps and not stopped:
            result = self.train_step()
            self._flush_log(bar)  # the previous step's numbers are ready by now; reading them costs no stall
            self.step += 1
            self.tokens_seen += result.input_tokens
            bar.update(1)
            if self.step % self.train_config.logging_steps == 0 or self.step == self.total_steps:
                self._pending_log = (self.step, self.stream.position, self.tokens_seen, result)
            evaluated_last = self._due(self.train_config.eval_steps) and bool(self.val)
            if evaluated_last:
                self._flush_log(bar)
                stopped = self.evaluate_and_check()
            if self._due(self.train_config.save_steps) and self.step < self.total_steps and not stopped:
                self._flush_log(bar)
                self.save_checkpoint()
        self._flush_log(bar)
        bar.close()
        if self.val and not evaluated_last:
            self.evaluate_and_check()
        self.metrics.close()

    def train_step(self) -> StepResult:
        """One window (grad_accum batches, made into what the stage trains on), trained on for the stage's
        updates_per_window optimizer updates; losses and metrics are averaged over those updates."""
        window, stats = self.stage.window(self.model, [self.stream.next_batch()
                                                       for _ in range(self.train_config.grad_accum)], self.step)
        global_units, input_tokens = global_sums(self.accelerator, sum(self.stage.count_units(b) for b in window),
                                                 sum(input_token_count(b) for b in window))
        updates = self.stage.updates_per_window
        sums: dict[str, torch.Tensor] = {}
        for _ in range(updates):
            per_unit, grad_norm, lr = self.update(window, global_units)
            for key, value in per_unit.items():
                sums[key] = sums.get(key, 0) + value / updates
        return StepResult(sums.pop("loss"), global_units, input_tokens, grad_norm, sums, lr, stats)

    def update(self, window: list[dict], global_units: int) -> tuple[dict[str, torch.Tensor], torch.Tensor | None,
                                                                       float]:
        """Gradients of the window's batches, then one optimizer step: (loss and metrics per unit, grad norm, lr)."""
        scale = gradient_scale(self.accelerator, global_units)
        loss_sum = torch.zeros((), device=self.accelerator.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for batch in window:
            device_batch = {key: value.to(self.accelerator.device, non_blocking=True) if torch.is_tensor(value)
                            else value for key, value in batch.items()}
            # accelerate counts the micro-batches: it skips the gradient sync (DDP) or tells DeepSpeed the
            # accumulation boundary is not reached until the window's last one (the accelerator's
            # gradient_accumulation_steps is train.grad_accum, see dist/accelerator.py).
            with self.accelerator.accumulate(self.model):
                with self.accelerator.autocast(), self.router_loss.recording() as router:
                    batch_loss, batch_metrics = self.stage.loss(self.model, device_batch)
                batch_loss, batch_metrics = router.add_to(batch_loss, batch_metrics, self.stage.count_units(batch),
                                                          device_batch)
                self.accelerator.backward(batch_loss * scale)
            loss_sum += batch_loss.detach()
            for key, value in batch_metrics.items():
                metric_sums[key] = metric_sums.get(key, 0) + value.detach()
        grad_norm = None
        if self.train_config.max_grad_norm:
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.train_config.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        if not follows_eval_loss(self.train_config) and not self.optimizer.step_was_skipped:
            self.scheduler.step()  # fp16 loss scaling skips steps with overflowing gradients; so does the schedule
        self.optimizer.zero_grad(set_to_none=True)
        per_unit = {key: global_tensor_sum(self.accelerator, value) / max(global_units, 1)
                    for key, value in {"loss": loss_sum, **metric_sums}.items()}
        return per_unit, grad_norm, lr

    def _flush_log(self, bar) -> None:
        if self._pending_log is None:
            return
        step, position, tokens, result = self._pending_log
        self._pending_log = None
        started, tokens_at_start = self._clock
        speed = (tokens - tokens_at_start) / max(time.perf_counter() - started, 1e-9)
        record = {
            "step": step,
            "epoch": round(position / self.stream.batches_per_epoch, 4),
            "loss": float(result.loss),
            "lr": result.lr,
            "tokens": tokens,
            "units": result.units,
            "tokens_per_s": round(speed, 1),
        }
        if result.grad_norm is not None:
            record["grad_norm"] = float(result.grad_norm)
        record.update({key: float(value) for key, value in result.metrics.items()})
        record.update(result.window_stats)
        self.metrics.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{speed:.0f}")

    @torch.no_grad()
    def evaluate(self) -> float:
        """The stage's evaluation of the validation split (mean loss and extra metrics; mean reward for online
        stages); logs it, returns its metric as a number to minimise."""
        self.model.eval()
        record = self.stage.evaluate(self.model, self.val, self.stream.batch_size, self.stream.collate,
                                     self.accelerator.device, self.accelerator.autocast)
        self.model.train()
        self.metrics.write({"step": self.step, **record})
        value = record[self.stage.eval_metric]
        return -value if self.stage.eval_higher_is_better else value

    def evaluate_and_check(self) -> bool:
        """Evaluate, step a plateau schedule, and say whether early stopping calls the run off."""
        score = self.evaluate()
        if follows_eval_loss(self.train_config):
            self.scheduler.step(score)
        if score < self.best_eval_loss:
            self.best_eval_loss, self.evals_without_improvement = score, 0
        else:
            self.evals_without_improvement += 1
        patience = self.train_config.early_stopping_patience
        if patience and self.evals_without_improvement >= patience:
            self.accelerator.print(f"early stopping at step {self.step}: {self.stage.eval_metric} has not improved "
                                   f"for {patience} evaluations")
            return True
        return False

    def save_checkpoint(self) -> None:
        state = {"stream_position": self.stream.position, "tokens_seen": self.tokens_seen,
                 "best_eval_loss": self.best_eval_loss, "evals_without_improvement": self.evals_without_improvement,
                 "stage": self.stage.state_dict()}
        if uses_deepspeed(self.accelerator):  # every process holds a shard of the state: all of them save
            save_engine_checkpoint(self.accelerator, self.run_dir, self.step, self.model, self.scheduler, state,
                                   keep=self.train_config.save_total_limit)
            return
        rng_states = gather_rng_states()  # every process's own, collected on the main one
        if self.accelerator.is_main_process:
            save_checkpoint(self.run_dir, self.step, self.accelerator.unwrap_model(self.model),
                            self.optimizer, self.scheduler, state, keep=self.train_config.save_total_limit,
                            scaler=self.accelerator.scaler, rng_states=rng_states)
        self.accelerator.wait_for_everyone()

    def _due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0


def enable_activation_checkpointing(model, offload: bool = False) -> None:
    """Recompute each decoder layer's activations in the backward pass (non-reentrant: works with frozen inputs);
    offload: the layer inputs kept for it wait in pinned host memory (on a CPU they are there already)."""
    offload = offload and torch.accelerator.current_accelerator() is not None  # pinning needs an accelerator
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False}, offload=offload)
    elif offload:
        raise TunesmithError("train.gradient_checkpointing: offload needs transformers >= 5.20; upgrade it "
                             "(pip install -U transformers) or set gradient_checkpointing: true")
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def input_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) input tokens of a host-side batch; packed batches carry no padding at all."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel()


def total_steps(train: TrainConfig, batches_per_epoch: int) -> int:
    if train.max_steps:
        return train.max_steps
    return max(1, math.ceil(train.epochs * batches_per_epoch / train.grad_accum))
