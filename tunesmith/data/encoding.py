"""Tokenizing records in shards: in this process or in `num_proc` forked workers, each finished shard
written to the cache at once (so an interrupted run resumes from the shards it finished), with one
progress bar over all records. A worker that dies (killed, out of memory) is noticed within a second and
reported; the shards finished by then stay in the cache. A cached shard found corrupt is encoded again."""

from __future__ import annotations

import multiprocessing
import queue as queues
import traceback
from typing import Callable

from tqdm.auto import tqdm

from tunesmith.data.cache import CorruptShard, ShardCache
from tunesmith.data.media_render import truncate
from tunesmith.data.records import Encoded
from tunesmith.errors import TunesmithError

SHARD_SIZE = 1000
EncodeMany = Callable[[list], list[Encoded]]  # records -> their samples, in order


def encode_shard(records: list, encode_many: EncodeMany, max_length: int) -> tuple[list[Encoded], dict]:
    """Encoded samples cut to max_length; samples left with no target tokens are dropped and counted."""
    samples, truncated, dropped = [], 0, 0
    for sample in encode_many(records):
        if len(sample.input_ids) > max_length:
            sample = truncate(sample, max_length)
            truncated += 1
        if sample.num_targets == 0:
            dropped += 1
            continue
        samples.append(sample)
    return samples, {"records": len(records), "truncated": truncated, "dropped": dropped}


def encode_records(records: list, encode_many: EncodeMany, max_length: int, num_proc: int,
                   cache: ShardCache | None) -> tuple[list[Encoded], dict]:
    """All records encoded, shard by shard (finished shards in the cache are reused), and summed stats."""
    shards = [records[start : start + SHARD_SIZE] for start in range(0, len(records), SHARD_SIZE)]
    todo = [index for index in range(len(shards)) if cache is None or not cache.has(index)]
    done = sum(len(shards[index]) for index in range(len(shards)) if index not in set(todo))
    results: dict[int, tuple[list[Encoded], dict]] = {}
    with tqdm(total=len(records), initial=done, desc="tokenizing", unit="sample", leave=False) as bar:
        if num_proc > 1 and len(todo) > 1:
            results = _encode_in_workers(shards, todo, encode_many, max_length, num_proc, cache, bar)
        else:
            for index in todo:
                results[index] = encode_shard(shards[index], encode_many, max_length)
                if cache is not None:
                    cache.write(index, *results[index])
                bar.update(len(shards[index]))
    samples, totals = [], {"records": 0, "truncated": 0, "dropped": 0}
    for index in range(len(shards)):
        shard_samples, stats = results[index] if index in results else _cached(cache, index, shards, encode_many,
                                                                               max_length)
        samples += shard_samples
        totals = {key: totals[key] + stats[key] for key in totals}
    if cache is not None:
        cache.finish(len(shards), totals)
    return samples, totals


def _cached(cache: ShardCache, index: int, shards, encode_many, max_length) -> tuple[list[Encoded], dict]:
    """A finished shard from the cache, or, when it is corrupt, encoded again (and rewritten)."""
    try:
        return cache.read(index)
    except CorruptShard as err:
        print(f"{err}; tokenizing that shard again", flush=True)
        cache.forget(index)
        result = encode_shard(shards[index], encode_many, max_length)
        cache.write(index, *result)
        return result


def _encode_in_workers(shards, todo, encode_many, max_length, num_proc, cache, bar) -> dict:
    """Forked workers take every num_proc-th shard of `todo`. Forking hands them `encode_many` (a closure over a
    tokenizer) without pickling; results come back through the cache, or through the queue without one."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_worker, daemon=True,
                               args=(shards, todo[rank::num_proc], encode_many, max_length, cache, queue))
               for rank in range(min(num_proc, len(todo)))]
    for worker in workers:
        worker.start()
    results = {}
    try:
        for _ in todo:
            kind, index, payload = _next_message(queue, workers)
            if kind == "error":
                raise TunesmithError(payload)
            results[index] = payload if cache is None else (None, None)
            bar.update(len(shards[index]))
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return {index: result for index, result in results.items() if result[0] is not None}


def _next_message(queue, workers) -> tuple:
    """The next worker message; a worker that died without a word (killed by a signal, out of memory) is an
    error at once rather than a wait that never ends."""
    while True:
        try:
            return queue.get(timeout=0.5)
        except queues.Empty:
            dead = [worker for worker in workers if worker.exitcode not in (None, 0)]
            if dead:
                code = dead[0].exitcode
                cause = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                raise TunesmithError(
                    f"a tokenizing worker (pid {dead[0].pid}) died ({cause}), perhaps out of memory; the shards "
                    "finished so far are kept in the data cache, so running again continues from them "
                    "(data.num_proc: 1 tokenizes in this process)") from None


def _worker(shards, indices, encode_many, max_length, cache, queue) -> None:
    for index in indices:
        try:
            result = encode_shard(shards[index], encode_many, max_length)
            if cache is not None:
                cache.write(index, *result)
            queue.put(("done", index, None if cache is not None else result))
        except TunesmithError as err:
            queue.put(("error", index, str(err)))
            return
        except Exception:  # noqa: BLE001 - any failure must reach the parent, which re-raises it
            queue.put(("error", index, f"tokenizing shard {index} failed:\n{traceback.format_exc()}"))
            return
