"""GRPO rollouts: G completions per prompt from the inference engine's batched decoder, laid out as tensors.

Each completion samples from its own random stream, seeded from (run seed, step, prompt index, generation
index): a resumed run and a run split over any number of processes draw exactly the same completions.
"""

from __future__ import annotations

import hashlib

import torch

from tunesmith.infer.decoding import decode_batch
from tunesmith.infer.settings import DecodeRequest, GenerationSettings


def generation_seed(seed: int, step: int | str, prompt_index: int, generation: int) -> int:
    """A 63-bit seed that depends on nothing but its four arguments (not on batch layout or process)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{prompt_index}/{generation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_completions(policy, tokenizer, prompts: list[list[int]], indexes: list[int], grpo, seed: int,
                       step: int | str, stop_ids: list[int]) -> list:
    """DecodeResults, G per prompt, prompt i's at rows i*G .. i*G+G-1. Call with the policy in eval mode."""
    settings = grpo.sampling.model_dump(exclude={"seed"})  # the shared sampling group's fields, by name
    requests = [DecodeRequest(ids, GenerationSettings(**settings, seed=generation_seed(seed, step, index, g)))
                for ids, index in zip(prompts, indexes) for g in range(grpo.num_generations)]
    return decode_batch(policy, tokenizer, requests, stop_ids, max_context=None)


def completion_batch(prompts: list[list[int]], completions: list[list[int]], group: int, pad_id: int) -> dict:
    """Prompt (left-padded) + completion (right-padded) rows, with completion ids and mask [rows, width].
    Completion rows are prompt-major: prompt i's G completions follow each other."""
    prompt_width = max(len(ids) for ids in prompts)
    width = max(1, max(len(ids) for ids in completions))
    rows = len(completions)
    input_ids = torch.full((rows, prompt_width + width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros((rows, width))
    for row, completion in enumerate(completions):
        prompt = prompts[row // group]
        input_ids[row, prompt_width - len(prompt):prompt_width] = torch.tensor(prompt)
        attention_mask[row, prompt_width - len(prompt):prompt_width + len(completion)] = 1
        input_ids[row, prompt_width:prompt_width + len(completion)] = torch.tensor(completion, dtype=torch.long)
        completion_mask[row, :len(completion)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "completion": input_ids[:, prompt_width:],
        "completion_mask": completion_mask,
    }


def completion_logits(model, batch: dict, temperature: float) -> torch.Tensor:
    """[rows, width, vocab] logits / temperature at the positions that predict the completion tokens.

    Through the (possibly wrapped) model's own forward, so a distributed wrapper sees the pass. The
    completion tokens are the last `width` columns, so the last width + 1 positions predict them."""
    width = batch["completion"].shape[1]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], use_cache=False, logits_to_keep=width + 1)
    return out.logits[:, :-1].float() / temperature
