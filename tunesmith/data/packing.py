"""Packing: several samples per row of max_length, each still seeing only itself.

A packed row carries `position_ids` that restart at 0 for every sample. Given position_ids and no 2D
attention mask, transformers (masking_utils.find_packed_sequence_indices) builds a block-diagonal causal mask
for SDPA and eager attention, and flash attention runs varlen over the same boundaries; train/forward.py
therefore leaves the attention mask out for packed batches. The first label of every sample is ignored: it
would be predicted from the previous sample's last token, which the unpacked sample never does.
"""

from __future__ import annotations

import bisect

from tunesmith.data.media_render import IMAGES, VIDEOS
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE

POSITION_IDS = "position_ids"  # meta key of a packed row's per-sample positions


def pack_samples(samples: list[Encoded], max_length: int) -> list[Encoded]:
    """Rows of at most max_length tokens, filled best-fit by decreasing length (deterministic)."""
    order = sorted(range(len(samples)), key=lambda index: (-len(samples[index].input_ids), index))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row), kept sorted: the tightest fit is found by bisection
    for index in order:
        length = len(samples[index].input_ids)
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            rows.append([index])
            bisect.insort(free, (max_length - length, len(rows) - 1))
            continue
        space, row = free.pop(slot)
        rows[row].append(index)
        bisect.insort(free, (space - length, row))
    return [_concatenate([samples[index] for index in sorted(row)]) for row in rows]


def _concatenate(samples: list[Encoded]) -> Encoded:
    input_ids, labels, positions, media = [], [], [], {IMAGES: [], VIDEOS: []}
    for sample in samples:
        input_ids += sample.input_ids
        labels += [IGNORE] + sample.labels[1:]
        positions += range(len(sample.input_ids))
        for kind, files in media.items():  # the row's images and videos, in the order of their tokens
            files += sample.meta.get(kind, [])
    present = {kind: files for kind, files in media.items() if files}
    return Encoded(input_ids, labels, {POSITION_IDS: positions, **present})


def packing_efficiency(rows: list[Encoded], max_length: int) -> float:
    """Real tokens over the slots of the packed rows (rows * max_length)."""
    return sum(len(row.input_ids) for row in rows) / max(1, len(rows) * max_length)
