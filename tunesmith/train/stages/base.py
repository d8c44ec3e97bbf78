"""What a stage is: how to encode a record, how to batch, and the loss of a batch.

Stages never look at the method (lora / full / ...): the model they get is already prepared.
The loop divides every summed quantity a stage returns by the global `count_units` of the accumulation
window (target tokens for token stages, pairs for preference stages), so accumulation is exact.
"""

from __future__ import annotations

import torch

from tunesmith.data.collator import TARGET_INDEX, pad_batch
from tunesmith.train.losses import cross_entropy_sum
from tunesmith.train.token_logps import LogpsModel, token_logps


class Stage:
    name = ""
    record_kind = "conversation"  # what data/formats should produce: conversation | text | preference | kto

    def __init__(self, config=None):
        self.config = config  # the run's StageConfig (knobs such as beta); None for stages without any

    def prepare(self, model, data, config, device):
        """The model to train, made ready once data and weights are loaded (e.g. a value head added, a
        reference model built). `data` is the PreparedData, `config` the RunConfig."""
        return model

    def make_trainer(self, accelerator, model, *args, **kwargs):
        """The loop that trains this stage: the shared one unless a stage needs its own (PPO's rollouts).
        `args` are the shared Trainer's after (accelerator, model, stage)."""
        from tunesmith.train.loop import Trainer

        return Trainer(accelerator, model, self, *args, **kwargs)

    def encode(self, record, template, data):
        raise NotImplementedError

    def encode_many(self, records: list, template, data) -> list:
        """`encode` of each record; stages whose tokenization batches well override it."""
        return [self.encode(record, template, data) for record in records]

    def collate(self, samples: list, pad_id: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def count_units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many units the batch's loss is summed over (known on the host before the forward pass)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(summed loss, summed extra metrics) over the batch's units."""
        raise NotImplementedError


class TokenStage(Stage):
    """Stages trained by next-token cross entropy on labelled tokens (pt, sft). Their tokenization batches
    well, so they implement `encode_many`, and one record is a batch of one."""

    def prepare(self, model, data, config, device):
        return LogpsModel(model)  # the loss inside the model's forward, where distributed wrappers see it

    def encode(self, record, template, data):
        return self.encode_many([record], template, data)[0]

    def encode_many(self, records, template, data):
        raise NotImplementedError

    def collate(self, samples, pad_id):
        return pad_batch(samples, pad_id)

    def count_units(self, batch):
        return batch[TARGET_INDEX].numel()

    def loss(self, model, batch):
        return cross_entropy_sum(token_logps(model, batch)), {}
