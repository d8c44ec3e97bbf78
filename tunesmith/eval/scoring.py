"""Batched forward passes for evaluation: next-token log-probabilities at the end of each prompt.

Prompts are right-padded, so every real token keeps its natural position and attends only to real tokens
before it; the hidden state of each prompt's last real token is picked out and only those rows go through the
output head (a full [batch, length, vocab] logits tensor would dwarf the rest of the work).
"""

from __future__ import annotations

import torch

from tunesmith.train.forward import hidden_states


def right_padded(prompts: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, : len(prompt)] = torch.tensor(prompt)
        attention_mask[row, : len(prompt)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@torch.no_grad()
def next_token_logprobs(model, prompts: list[list[int]], token_ids: list[int], pad_id: int) -> torch.Tensor:
    """[len(prompts), len(token_ids)]: log p(token | prompt) over the whole vocabulary, in float32."""
    device = next(model.parameters()).device
    batch = right_padded(prompts, pad_id, device)
    last = batch["attention_mask"].sum(dim=1) - 1
    hidden = hidden_states(model, batch)[torch.arange(len(prompts), device=device), last]
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)[:, token_ids].cpu()


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
