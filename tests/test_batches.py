"""The batch stream: one permutation per epoch, and prefetching that changes nothing but timing."""

from __future__ import annotations

import torch

from tunesmith.train.batches import BatchStream


def stream(**options) -> BatchStream:
    samples = list(range(23))
    return BatchStream(samples, 4, lambda rows: {"ids": torch.tensor(rows)}, seed=7, **options)


def take(batches: BatchStream, count: int) -> list[list[int]]:
    return [batches.next_batch()["ids"].tolist() for _ in range(count)]


def test_each_epoch_is_one_permutation_of_the_samples_drawn_once(monkeypatch):
    batches = stream()
    draws = []
    original = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *args, **kwargs: draws.append(1) or original(*args, **kwargs))
    first, second = take(batches, 6), take(batches, 6)
    assert len(draws) == 2  # two epochs of 6 batches, one permutation each
    assert sorted(sum(first, [])) == list(range(23)) == sorted(sum(second, []))
    assert first != second


def test_prefetching_yields_the_same_batches_also_after_a_resume_moves_the_position():
    plain, ahead = stream(), stream(prefetch=True)
    assert take(ahead, 8) == take(plain, 8)
    plain.position = ahead.position = 3  # as Trainer.resume does
    assert take(ahead, 5) == take(plain, 5)
