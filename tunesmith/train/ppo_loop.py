"""PPO's loop: per step, one rollout batch, then `ppo.epochs` optimizer steps on it.

It reuses the shared loop's optimizer, schedule, metrics log and checkpoints; only the order of work
differs (generate, score, then train several times on the same samples).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from tunesmith.dist.collectives import global_sums, global_tensor_sum, gradient_scale
from tunesmith.errors import TunesmithError
from tunesmith.train.checkpoint import load_checkpoint, save_checkpoint
from tunesmith.train.loop import total_steps
from tunesmith.train.metrics import MetricsLog
from tunesmith.train.optim import build_optimizer, build_scheduler


class PpoTrainer:
    def __init__(self, accelerator, model, stage, train, stream, run_dir, sinks=None):
        if train.grad_accum > 1:
            raise TunesmithError("stage ppo takes one rollout batch per step and does not accumulate; set "
                                 "train.grad_accum: 1 and raise train.batch_size for larger rollouts")
        self.accelerator = accelerator
        self.stage = stage
        self.train_config = train
        self.stream = stream
        self.run_dir = run_dir
        self.epochs = stage.config.ppo.epochs
        self.total_steps = total_steps(train, stream.batches_per_epoch)
        optimizer = build_optimizer(model, train)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = build_scheduler(self.optimizer, train, self.total_steps * self.epochs)
        self.metrics = MetricsLog(run_dir, enabled=accelerator.is_main_process, sinks=sinks)
        self.step = 0

    def resume(self, checkpoint) -> None:
        """Continue from `checkpoint`: policy and value head, optimizer, scheduler, RNG, data position and the
        reward normaliser's running statistics."""
        state = load_checkpoint(checkpoint, self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler)
        self.step = state["step"]
        self.stream.position = state["stream_position"]
        self.stage.normalizer.load(state["reward_normalizer"])
        self.metrics.truncate_after(self.step)
        self.accelerator.print(f"resumed from {checkpoint} at step {self.step}")

    def run(self) -> None:
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="ppo", unit="step",
                   disable=not self.accelerator.is_main_process)
        started = time.perf_counter()
        while self.step < self.total_steps:
            record = self.train_step()
            self.step += 1
            bar.update(1)
            if self.step % self.train_config.logging_steps == 0 or self.step == self.total_steps:
                record.update(step=self.step, lr=self.scheduler.get_last_lr()[0],
                              seconds=round(time.perf_counter() - started, 1))
                self.metrics.write(record)
                bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.3f}")
            if self.train_config.save_steps and self.step % self.train_config.save_steps == 0 \
                    and self.step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        self.metrics.close()

    def train_step(self) -> dict:
        """One rollout batch (each process its own prompts), then `epochs` optimizer steps on it; the losses
        and metrics are means over the reply tokens of all processes, averaged over the epochs."""
        batch = {key: value.to(self.accelerator.device) if torch.is_tensor(value) else value
                 for key, value in self.stream.next_batch().items()}
        rollout = self.stage.rollout(self.model, batch, self.accelerator)
        (units,) = global_sums(self.accelerator, self.stage.count_units(rollout))
        scale = gradient_scale(self.accelerator, units)
        sums: dict[str, torch.Tensor] = {}
        for _ in range(self.epochs):
            with self.accelerator.autocast():
                loss, metrics = self.stage.loss(self.model, rollout)
            self.accelerator.backward(loss * scale)
            if self.train_config.max_grad_norm:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.train_config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0) + value.detach()
        means = {key: float(global_tensor_sum(self.accelerator, value)) / max(units, 1) / self.epochs
                 for key, value in sums.items()}
        return {**rollout["stats"], **means}

    def save_checkpoint(self) -> None:
        if self.accelerator.is_main_process:
            state = {"stream_position": self.stream.position, "reward_normalizer": self.stage.normalizer.state()}
            save_checkpoint(self.run_dir, self.step, self.accelerator.unwrap_model(self.model),
                            self.optimizer, self.scheduler, state, keep=self.train_config.save_total_limit)
        self.accelerator.wait_for_everyone()
