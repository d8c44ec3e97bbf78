"""The order in which samples are seen: seeded per epoch, sharded by rank, resumable by position."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from tunesmith.data.records import Encoded


@dataclass
class BatchStream:
    """An endless stream of padded batches over the epochs; `position` says where it is.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run that sets
    `position` sees exactly the batches the uninterrupted run would have seen.

    With `prefetch`, the next batch is collated on a worker thread while the device computes on this one;
    with `pin`, its tensors go to page-locked memory, so the copy to a GPU is asynchronous (CUDA only).
    """

    samples: list[Encoded]
    batch_size: int
    collate: Callable[[list], dict[str, torch.Tensor]]
    seed: int
    rank: int = 0
    world_size: int = 1
    position: int = 0  # batches already taken, counted over all epochs
    prefetch: bool = False
    pin: bool = False
    _order: tuple[int, list[int]] = field(default=(-1, []), init=False, repr=False)  # (epoch, its permutation)
    _ahead: tuple | None = field(default=None, init=False, repr=False)  # (position, future of its batch)
    _worker: object = field(default=None, init=False, repr=False)  # the thread that collates ahead

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.samples) / (self.batch_size * self.world_size)))

    def next_batch(self) -> dict[str, torch.Tensor]:
        ahead, self._ahead = self._ahead, None
        # A prefetched batch is used only if it is for this position (a resume may have moved it since).
        batch = ahead[1].result() if ahead and ahead[0] == self.position else self._build(self.position)
        self.position += 1
        if self.prefetch:
            if self._worker is None:
                from concurrent.futures import ThreadPoolExecutor

                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-batches")
            self._ahead = (self.position, self._worker.submit(self._build, self.position))
        return batch

    def _build(self, position: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(position, self.batches_per_epoch)
        order = self._epoch_order(epoch)
        per_step = self.batch_size * self.world_size
        chunk = order[index * per_step : (index + 1) * per_step]
        mine = chunk[self.rank :: self.world_size] or chunk[:1]
        batch = self.collate([self.samples[i] for i in mine])
        return {key: value.pin_memory() for key, value in batch.items()} if self.pin else batch

    def _epoch_order(self, epoch: int) -> list[int]:
        """The epoch's permutation, drawn once per epoch (a randperm of a large dataset per batch adds up)."""
        if self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.samples), generator=generator).tolist())
        return self._order[1]


def eval_batches(samples: list[Encoded], batch_size: int, collate):
    for start in range(0, len(samples), batch_size):
        yield collate(samples[start : start + batch_size])
