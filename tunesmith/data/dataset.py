"""From the config's datasets to tokenized train / validation samples, with counts of what was dropped."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from tunesmith.config.schema import DataConfig
from tunesmith.data.files import read_rows
from tunesmith.data.formats import convert, fill_vars, to_text
from tunesmith.data.records import Encoded
from tunesmith.data.registry import resolve_datasets
from tunesmith.errors import TunesmithError


@dataclass
class PreparedData:
    train: list[Encoded]
    val: list[Encoded]
    truncated: int = 0
    dropped: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        tokens = sum(len(sample.input_ids) for sample in self.train)
        return (
            f"data: {len(self.train)} train / {len(self.val)} val samples, {tokens:,} train tokens; "
            f"{self.truncated} truncated to max_length, {self.dropped} dropped (no target tokens left)"
        )


def load_records(data: DataConfig, record_kind: str = "conversation") -> list:
    """Typed records of every configured dataset, placeholders filled, at most max_samples from each.

    record_kind 'text' reads plain text for pre-training; 'conversation' converts by the dataset's format.
    """
    to_record = to_text if record_kind == "text" else convert
    records = []
    for spec in resolve_datasets(data.datasets, data.dataset_dir):
        rows = read_rows(spec.path)
        limit = min(x for x in (data.max_samples, spec.num_samples, len(rows)) if x is not None)
        records += [fill_vars(to_record(row, spec, index), data.vars) for index, row in enumerate(rows[:limit])]
    return records


def prepare_data(data: DataConfig, encode, record_kind: str, seed: int) -> PreparedData:
    """Encode every record with `encode(record) -> Encoded`, truncate, then split off validation."""
    records = load_records(data, record_kind)
    encoded, truncated, dropped = [], 0, 0
    for record in tqdm(records, desc="tokenizing", unit="sample", leave=False):
        sample = encode(record)
        if len(sample.input_ids) > data.max_length:
            sample = Encoded(sample.input_ids[: data.max_length], sample.labels[: data.max_length])
            truncated += 1
        if sample.num_targets == 0:
            dropped += 1
            continue
        encoded.append(sample)
    if not encoded:
        raise TunesmithError(
            f"no trainable samples: all {len(records)} were dropped; raise data.max_length ({data.max_length}) "
            "or check that the data has assistant responses"
        )
    train, val = _split(encoded, data.val_size, seed)
    return PreparedData(train, val, truncated, dropped)


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
