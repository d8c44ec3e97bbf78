"""How a batch goes into the decoder: the one place that knows packed and padded batches apart.

A padded batch gives the decoder its attention mask. A packed batch (it has position_ids, restarting at 0 for
every sample, see data/packing.py) leaves the mask out: transformers then builds a block-diagonal causal mask
from the position_ids for the attention kinds that take a mask (eager, sdpa, flex), one row or many. Flash
attention takes no mask and reads packing from the position_ids only when the batch has a single row, so for
it a packed batch is flattened into one row: the samples still restart their positions, none sees another,
and no work is spent on a mask.

A batch from the collator also names its real tokens (`token_index`). Where it pays, the decoder then runs on
those tokens alone, all samples concatenated into one row with positions restarting per sample (padding-free):
no padding token is computed or kept for the backward pass, and the samples stay apart exactly as packed ones
do. The hidden states are put back in the batch's [rows, width] layout, so callers never see the difference.
"""

from __future__ import annotations

import torch

from tunesmith.data.collator import TOKEN_INDEX
from tunesmith.errors import TunesmithError

# Largest one-row attention area (tokens squared) run padding-free without flash attention: sdpa and flex build
# a [tokens, tokens] block-diagonal mask there (64 MB of booleans at this size, i.e. 8,192 tokens).
MASK_ELEMENTS = 1 << 26


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


def runs_padding_free(batch: dict[str, torch.Tensor], config) -> bool:
    """Whether the decoder takes this batch as one padding-free row: the collator named its real tokens, no
    images ride along (their positions are computed per row), and one row costs less than the padded rows.

    Per layer and token the linear layers cost ~2 x their weights in FLOPs, and attention ~4 x hidden per pair of
    tokens it scores. Flash attention scores each sample alone; sdpa and flex score the whole row under a block
    mask, so a row of many short samples can cost more than the padded rows it replaces. Eager attention keeps
    its [heads, tokens, tokens] probabilities for the backward pass: it keeps the padded rows.
    """
    attention = getattr(config, "_attn_implementation", None) or "eager"
    config = config.get_text_config()  # a vision-language model's decoder sizes (text-only batches come here)
    if TOKEN_INDEX not in batch or any(key in batch for key in MEDIA_KEYS) or attention == "eager":
        return False
    rows, width = batch["input_ids"].shape
    tokens = batch[TOKEN_INDEX].numel()
    if flattens_packed_rows(attention):
        return True
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    layer_weights = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * (config.intermediate_size or 4 * hidden)
    pair_cost = 4 * heads * head_dim

    def cost(row_tokens: int, row_count: int) -> int:
        return row_count * (2 * layer_weights * row_tokens + pair_cost * row_tokens**2)

    return tokens**2 <= MASK_ELEMENTS and cost(tokens, 1) < cost(width, rows)


def padding_free_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch's real tokens as one row, each sample's positions restarting at 0 (packed rows keep theirs)."""
    index = batch[TOKEN_INDEX]
    width = batch["input_ids"].shape[1]
    positions = batch["position_ids"].reshape(-1).index_select(0, index) if "position_ids" in batch else index % width
    return {"input_ids": batch["input_ids"].reshape(-1).index_select(0, index).unsqueeze(0),
            "position_ids": positions.unsqueeze(0)}


def hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the decoder, without the output head. Calls the decoder directly, past any
    DDP/FSDP wrapper, so use it where no gradients are synchronised (scoring, evaluation)."""
    hidden = decoder_hidden(model, batch)
    return hidden.reshape(batch["input_ids"].shape + hidden.shape[-1:])


def decoder_hidden(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The causal LM's last hidden states for a batch ([rows, width, h], or [1, rows * width, h] for packed rows
    flattened for flash attention). A vision-language batch runs the vision tower and projector before the decoder."""
    # `model` may be a distributed wrapper (DeepSpeed's engine has a `config` of its own): the model's config
    config = getattr(model, "module", model).config
    if runs_padding_free(batch, config):
        hidden = model.get_decoder()(**padding_free_inputs(batch), use_cache=False).last_hidden_state[0]
        rows, width = batch["input_ids"].shape
        # Back in the [rows, width] layout (zeros on padding): index_copy passes gradients to the real tokens only.
        return hidden.new_zeros(rows * width, hidden.shape[-1]).index_copy(0, batch[TOKEN_INDEX], hidden) \
            .view(rows, width, -1)
    inputs = model_inputs(batch, config)
    if not any(key in batch for key in MEDIA_KEYS):  # LLaVA marks no token types: its pixels say it
        return model.get_decoder()(**inputs, use_cache=False).last_hidden_state
    from tunesmith.model.vision import multimodal_body, packed_position_ids

    body = multimodal_body(model)
    if "position_ids" in batch:
        inputs["position_ids"] = packed_position_ids(body, batch)
    return body(**inputs, use_cache=False).last_hidden_state
