"""Forward passes that compute logits only where a loss is taken.

With vocabularies of 50k-150k entries, logits for prompt and padding positions cost more memory than the
rest of the model. In a single process the output head is applied to the target positions alone. Under
DDP / FSDP / DeepSpeed the call must go through the outermost wrapper, so there the model's own forward is
asked for the positions where some row has a target (`logits_to_keep`): nearly every position once a batch
has a few rows, which is why the single-process path does not take it (2x the head's work on a 32k vocab).
"""

from __future__ import annotations

import torch

from tunesmith.data.template import IGNORE


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for every position whose next token is trained: [n, vocab] and [n]."""
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    if not _distributed():
        hidden = hidden_states(model, batch)[:, :-1][mask]  # position t predicts token t + 1
        logits = model.get_output_embeddings()(hidden)
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits, targets[mask]
    keep = mask.any(dim=0).nonzero().squeeze(1)
    inputs = model_inputs(batch)
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    kept_mask = mask[:, keep]
    return logits[kept_mask], targets[:, keep][kept_mask]


def _distributed() -> bool:
    """Whether the model may be wrapped for distributed training (DDP/FSDP/DeepSpeed all start a process group)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last hidden states of the decoder, without the output head. Calls the decoder directly, past any
    DDP/FSDP wrapper, so use it where no gradients are synchronised (scoring, evaluation)."""
    inputs = model_inputs(batch)
    if MEDIA_KEYS[-1] in batch:  # a vision-language batch: the tower and projector run before the decoder
        from tunesmith.model.vision import multimodal_body, packed_position_ids

        body = multimodal_body(model)
        if "position_ids" in batch:
            inputs["position_ids"] = packed_position_ids(body, batch)
        return body(**inputs, use_cache=False).last_hidden_state
    return model.get_decoder()(**inputs, use_cache=False).last_hidden_state


# What a vision-language batch adds (data/collator.py); mm_token_type_ids is in every batch of such a model.
MEDIA_KEYS = ("pixel_values", "image_grid_thw", "mm_token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model takes from a batch. A packed batch (it has position_ids) leaves the attention mask out:
    transformers then builds a block-diagonal mask from the position_ids (see data/packing.py)."""
    keys = ("input_ids", "position_ids") if "position_ids" in batch else ("input_ids", "attention_mask")
    return {key: batch[key] for key in keys + MEDIA_KEYS if key in batch}
