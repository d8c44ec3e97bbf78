"""The order in which samples are seen: seeded per epoch, sharded by rank, resumable by position."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from tunesmith.data.records import Encoded


@dataclass
class BatchStream:
    """An endless stream of padded batches over the epochs; `position` says where it is.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run that sets
    `position` sees exactly the batches the uninterrupted run would have seen.
    """

    samples: list[Encoded]
    batch_size: int
    collate: Callable[[list], dict[str, torch.Tensor]]
    seed: int
    rank: int = 0
    world_size: int = 1
    position: int = 0  # batches already taken, counted over all epochs

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / (self.batch_size * self.world_size)))

    def next_batch(self) -> dict[str, torch.Tensor]:
        epoch, index = divmod(self.position, self.batches_per_epoch)
        order = self._epoch_order(epoch)
        per_step = self.batch_size * self.world_size
        chunk = order[index * per_step : (index + 1) * per_step]
        mine = chunk[self.rank :: self.world_size] or chunk[:1]
        self.position += 1
        return self.collate([self.samples[i] for i in mine])

    def _epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.samples), generator=generator).tolist()


def eval_batches(samples: list[Encoded], batch_size: int, collate):
    for start in range(0, len(samples), batch_size):
        yield collate(samples[start : start + batch_size])
