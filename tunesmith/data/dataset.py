"""From the config's datasets to tokenized train / validation samples, with counts of what was dropped."""

from __future__ import annotations

import gc
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config.schema import DataConfig
from tunesmith.data.files import data_files, read_rows
from tunesmith.data.formats import convert, detect_format, fill_vars
from tunesmith.data.records import Encoded
from tunesmith.data.registry import DatasetSpec, resolve_datasets
from tunesmith.errors import TunesmithError


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    truncated: int = 0
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # records, cached (1 when read from the cache), ...
    packing_efficiency: float | None = None

    def summary(self) -> str:
        tokens = sum(len(sample.input_ids) for sample in self.train)
        unit = "packed rows" if self.packing_efficiency is not None else "samples"
        text = (
            f"data: {len(self.train)} train / {len(self.val)} val {unit}, {tokens:,} train tokens; "
            f"{self.truncated} truncated to max_length, {self.dropped} dropped (no target tokens left)"
        )
        if self.packing_efficiency is not None:
            text += f"; packing efficiency {self.packing_efficiency:.1%} (real tokens / slots)"
        if self.counts.get("cached"):
            text += "; tokens read from the cache"
        return text


def load_records(data: DataConfig, record_kind: str = "conversation") -> list:
    """Typed records of every configured dataset, placeholders filled, at most max_samples from each.

    record_kind: 'conversation' -> Conversation, 'text' -> Text, 'preference' -> Preference, 'kto' -> KtoExample.
    """
    return _records(resolve_datasets(data.datasets, data.dataset_dir), data, record_kind)


def _records(specs: list[DatasetSpec], data: DataConfig, record_kind: str) -> list:
    records = []
    for spec in specs:
        limits = [limit for limit in (data.max_samples, spec.num_samples) if limit is not None]
        records += _dataset_records(spec, data, record_kind, min(limits) if limits else None)
    return records


def _dataset_records(spec: DatasetSpec, data: DataConfig, record_kind: str, limit: int | None) -> list:
    records = []
    for path in data_files(spec.path):
        rows = read_rows(path)
        if spec.formatting == "auto":
            spec = detect_format(spec, rows[0])
        for index, row in enumerate(rows[: None if limit is None else limit - len(records)]):
            record = convert(row, spec, f"{path}: record {index + 1}", record_kind)
            records.append(fill_vars(record, data.vars))
        if limit is not None and len(records) >= limit:
            break
    return records


def prepare_data(data: DataConfig, encode_many, record_kind: str, seed: int,
                 fingerprint: str | None = None, vocab_size: int | None = None) -> PreparedData:
    """Encode the records with `encode_many(records) -> [Encoded]` (a shard at a time), truncate, split off
    validation, pack if asked.

    With a `fingerprint` of the encoder (cache.encoder_fingerprint) and data.cache on, tokens are cached;
    with `vocab_size`, cached token ids are checked against it.
    """
    from tunesmith.user_dirs import cache_dir
    from tunesmith.data.cache import ShardCache, cache_key
    from tunesmith.data.encoding import encode_records

    specs = resolve_datasets(data.datasets, data.dataset_dir)
    cache = None
    if data.cache and fingerprint:
        root = Path(data.cache_dir).expanduser() if data.cache_dir else cache_dir() / "data"
        folder = root / cache_key(data, specs, record_kind, fingerprint)
        cache = ShardCache(folder, vocab_size)
    manifest = cache.manifest() if cache is not None else None
    with _collector_paused():
        cached = _complete_cache(cache, manifest)
        if cached is not None:
            samples, stats = cached
        else:
            records = _records(specs, data, record_kind)
            samples, stats = encode_records(records, encode_many, data.max_length, data.num_proc, cache)
    if not samples:
        raise TunesmithError(
            f"no trainable samples: all {stats['records']} were dropped; raise data.max_length ({data.max_length}) "
            "or check that the data has assistant responses"
        )
    train, val = _split(samples, data.val_size, seed)
    prepared = PreparedData(train, val, stats["truncated"], stats["dropped"], stats)
    if data.packing:
        from tunesmith.data.packing import pack_samples, packing_efficiency

        prepared.train = pack_samples(train, data.max_length)
        prepared.val = pack_samples(val, data.max_length)
        prepared.packing_efficiency = packing_efficiency(prepared.train, data.max_length)
    return prepared


def _complete_cache(cache, manifest: dict | None):
    """(samples, stats) from a complete cache, or None when there is none or a shard of it is corrupt (that
    shard is dropped and encoded again; the intact ones are reused)."""
    from tunesmith.data.cache import CorruptShard

    if manifest is None:
        return None
    samples = []
    for index in range(manifest["shards"]):
        try:
            samples += cache.read(index)[0]
        except CorruptShard as err:
            print(f"{err}; rebuilding it from the data", flush=True)
            cache.forget(index)
            return None
    return samples, {**manifest["stats"], "cached": 1}


@contextmanager
def _collector_paused():
    """Python's cycle collector off while millions of token lists are built: it would walk them over and over
    (half the time of a cached load) and there are no cycles among them to find."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _split(samples: list[Encoded], val_size: float, seed: int) -> tuple[list[Encoded], list[Encoded]]:
    if not val_size:
        return samples, []
    count = int(val_size) if val_size >= 1 else max(1, round(len(samples) * val_size))
    if count >= len(samples):
        raise TunesmithError(f"data.val_size ({val_size}) leaves no training samples out of {len(samples)}")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    val_ids = set(order[:count])
    return [s for i, s in enumerate(samples) if i not in val_ids], [samples[i] for i in order[:count]]
