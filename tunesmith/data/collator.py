"""Batches of encoded samples as padded tensors (right padding; labels -100 on padding).

Packed rows (data/packing.py) also get `position_ids`, restarting per sample; their padding gets positions
0, 1, ... of its own, so it forms one more sequence that no real token attends to.

Every batch carries `target_index`: the flat positions (row * width + t) whose next token is trained, found
here on the host so that the training step selects them on the device with index_select, where a boolean
mask would make the host wait for the device to count them. Likewise `token_index`, the flat positions of its
real tokens: with it train/forward.py runs the decoder on those tokens alone, as one row (padding-free).
"""

from __future__ import annotations

import torch

from tunesmith.data.packing import POSITION_IDS
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE

TARGET_INDEX = "target_index"
TOKEN_INDEX = "token_index"


def pad_batch(samples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(sample.input_ids) for sample in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), width), dtype=torch.long)
    packed = any(POSITION_IDS in sample.meta for sample in samples)
    position_ids = torch.arange(width).repeat(len(samples), 1) if packed else None
    for row, sample in enumerate(samples):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        labels[row, :n] = torch.tensor(sample.labels)
        attention_mask[row, :n] = 1
        if packed:
            position_ids[row, :n] = torch.tensor(sample.meta.get(POSITION_IDS, range(n)))
            position_ids[row, n:] = torch.arange(width - n)
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
             TARGET_INDEX: target_index(labels), TOKEN_INDEX: attention_mask.reshape(-1).nonzero().squeeze(1)}
    if packed:
        batch["position_ids"] = position_ids
    return batch


def target_index(labels: torch.Tensor) -> torch.Tensor:
    """[targets] flat positions row * width + t of a [rows, width] label tensor where labels[row, t + 1] is
    trained, in row-major order."""
    rows, positions = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    return rows * labels.shape[1] + positions


def add_pixels(batch: dict[str, torch.Tensor], rows: list[Encoded], media) -> dict[str, torch.Tensor]:
    """A batch for a vision-language model: also the pixels of its rows' images and videos (made here, never
    cached) and what else the model needs to place them (Qwen2-VL: token types). `rows` are the batch's samples,
    in order."""
    from tunesmith.data.media_render import IMAGES, VIDEOS

    images = [path for row in rows for path in row.meta.get(IMAGES, [])]
    if images:
        batch.update(media.pixels(images))
    videos = [path for row in rows for path in row.meta.get(VIDEOS, [])]
    if videos:
        batch.update(media.video_pixels(videos))
    batch.update(media.token_inputs(batch["input_ids"]))
    return batch
