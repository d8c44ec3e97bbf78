"""Batched generation for evaluation: prompts left-padded so every reply starts at the same column.

Written here on top of `engine.model` / `engine.template` rather than the engine's one-conversation stream;
`generate` derives position ids from the attention mask, so a padded prompt decodes as it would alone.
"""

from __future__ import annotations

import torch


def left_padded(prompts: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@torch.no_grad()
def generate_batch(engine, prompts: list[list[int]], max_new_tokens: int, temperature: float = 0.0,
                   top_p: float = 1.0) -> list[str]:
    """The reply text for each prompt (special tokens dropped): greedy when temperature is 0."""
    tokenizer = engine.tokenizer
    device = next(engine.model.parameters()).device
    batch = left_padded(prompts, tokenizer.pad_token_id, device)
    sampling = temperature > 0
    output = engine.model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=None,
        eos_token_id=engine.template.stop_token_ids(),
        pad_token_id=tokenizer.pad_token_id,
    )
    replies = output[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(reply, skip_special_tokens=True).strip() for reply in replies]
