"""How a batch goes into the decoder: the one place that knows packed and padded batches apart.

A padded batch gives the decoder its attention mask. A packed batch (it has position_ids, restarting at 0 for
every sample, see data/packing.py) leaves the mask out: transformers then builds a block-diagonal causal mask
from the position_ids for the attention kinds that take a mask (eager, sdpa, flex), one row or many. Flash
attention takes no mask and reads packing from the position_ids only when the batch has a single row, so for
it a packed batch is flattened into one row: the samples still restart their positions, none sees another,
and no work is spent on a mask.
"""

from __future__ import annotations

import torch

from tunesmith.errors import TunesmithError


def flattens_packed_rows(attn_implementation: str | None) -> bool:
    """Whether this attention kind needs a packed batch as one row to keep its samples apart (flash kinds)."""
    return "flash" in (attn_implementation or "")


# What a vision-language batch adds (data/collator.py): pixels where it has images; Qwen2-VL's token types always.
MEDIA_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts",
              "mm_token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor], config=None) -> dict[str, torch.Tensor]:
    """What the decoder takes from a batch; `config` (the model's) decides whether packed rows are flattened."""
    media = {key: batch[key] for key in MEDIA_KEYS if key in batch}
    if "position_ids" not in batch:
        return {key: batch[key] for key in ("input_ids", "attention_mask") if key in batch} | media
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if flattens_packed_rows(getattr(config, "_attn_implementation", None)):
        if media:  # M-RoPE positions are computed per row (model/vision.py): flattening would mix samples
            raise TunesmithError("packed image batches cannot run with flash attention yet: set "
                                 "model.attn_implementation: sdpa, or data.packing: false")
        inputs = flatten_rows(inputs)
    return inputs | media


def flatten_rows(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[rows, width] tensors as [1, rows * width]: row r's position t lands at r * width + t, the same flat
    index the collator's target index uses, so hidden states are found alike in either layout."""
    return {key: value.reshape(1, -1) for key, value in inputs.items()}


def hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the decoder, without the output head. Calls the decoder directly, past any
    DDP/FSDP wrapper, so use it where no gradients are synchronised (scoring, evaluation)."""
    hidden = decoder_hidden(model, batch)
    return hidden.reshape(batch["input_ids"].shape + hidden.shape[-1:])


def decoder_hidden(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The causal LM's last hidden states for a batch ([rows, width, h], or [1, rows * width, h] for flattened
    packed rows). A vision-language batch runs the vision tower and projector before the decoder."""
    inputs = model_inputs(batch, model.config)
    if not any(key in batch for key in MEDIA_KEYS):  # LLaVA marks no token types: its pixels say it
        return model.get_decoder()(**inputs, use_cache=False).last_hidden_state
    from tunesmith.model.vision import multimodal_body, packed_position_ids

    body = multimodal_body(model)
    if "position_ids" in batch:
        inputs["position_ids"] = packed_position_ids(body, batch)
    return body(**inputs, use_cache=False).last_hidden_state
