"""Forward passes that compute logits only where a loss is taken.

The output head is applied to the hidden states of target positions alone: with vocabularies of 50k-150k
entries, materialising logits for prompt and padding positions costs more memory than the rest of the model.
"""

from __future__ import annotations

import torch

from tunesmith.data.template import IGNORE


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) for every position whose next token is trained: [n, vocab] and [n]."""
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    hidden = hidden_states(model, batch)[:, :-1][mask]
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, targets[mask]


def hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    return model.get_decoder()(**inputs, use_cache=False).last_hidden_state
