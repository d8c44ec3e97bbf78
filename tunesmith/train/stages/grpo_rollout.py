"""Online rollouts (grpo, and ppo with one reply per prompt): completions from the inference engine's batched
decoder, laid out as tensors. A rollout backend has `sync(policy)` (called before each rollout, after the updates)
and `sample(...)`: HfRollout here samples from the policy itself; vllm_rollout.VllmRollout is the GPU one.

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


def sample_completions(policy, tokenizer, prompts: list[list[int]], indexes: list[int], sampling, group: int,
                       seed: int, step: int | str, stop_ids: list[int]) -> list:
    """DecodeResults, `group` per prompt, prompt i's at rows i*group .. i*group+group-1; `sampling` is the stage's
    sampling group. Call with the policy in eval mode."""
    settings = sampling.model_dump(exclude={"seed"})  # the shared sampling group's fields, by name
    requests = [DecodeRequest(ids, GenerationSettings(**settings, seed=generation_seed(seed, step, index, g)))
                for ids, index in zip(prompts, indexes) for g in range(group)]
    return decode_batch(policy, tokenizer, requests, stop_ids, max_context=None)


class HfRollout:
    """Samples from the policy itself, so there are no weights to sync."""

    def sync(self, policy) -> None:
        pass

    def sample(self, policy, tokenizer, prompts: list[list[int]], indexes: list[int], sampling, group: int,
               seed: int, step: int | str, stop_ids: list[int]) -> list:
        return sample_completions(policy, tokenizer, prompts, indexes, sampling, group, seed, step, stop_ids)


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

