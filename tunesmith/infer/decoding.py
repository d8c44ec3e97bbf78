"""Decode a batch of prompts together, step by step, with left padding and a shared KV cache.

Each row keeps its own settings, stop strings and token budget. A row leaves the batch as soon as it is
done (end of turn, stop string, budget, or cancelled by its caller), and its KV cache rows go with it, so
the remaining rows do not pay for finished ones.
"""

from __future__ import annotations

import torch

from tunesmith.infer.sampling import BatchSampler
from tunesmith.infer.settings import DecodeRequest, DecodeResult
from tunesmith.infer.text_tracker import TextTracker


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask with every prompt right-aligned, so all rows continue at the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class _Row:
    def __init__(self, request: DecodeRequest, tokenizer, budget: int):
        self.request = request
        self.tracker = TextTracker(tokenizer, request.settings.stop)
        self.budget = budget
        self.finish_reason: str | None = None
        self.outcome: DecodeResult | None = None

    def advance(self, token: int, stop_ids: set[int]) -> None:
        if token in stop_ids:
            self.finish_reason = "stop"
            return
        piece = self.tracker.add(token)
        if piece:
            self.request.on_text(piece)
        if self.tracker.stopped:
            self.finish_reason = "stop"
        elif len(self.tracker.ids) >= self.budget:
            self.finish_reason = "length"

    def finish(self) -> None:
        """Hand out the held-back text and the result, as soon as the row is done."""
        rest = self.tracker.finish()
        if rest:
            self.request.on_text(rest)
        generated = len(self.tracker.ids) + (self.finish_reason == "stop" and not self.tracker.stopped)
        self.outcome = DecodeResult(self.tracker.text, self.finish_reason, len(self.request.prompt_ids), generated)
        self.request.on_done(self.outcome)


@torch.no_grad()
def decode_batch(model, tokenizer, requests: list[DecodeRequest], stop_ids: list[int],
                 max_context: int | None) -> list[DecodeResult]:
    """Generate a reply for every request; results in the order of `requests`."""
    device = next(model.parameters()).device
    rows = [_Row(r, tokenizer, _budget(r, max_context)) for r in requests]
    prompts = [r.prompt_ids for r in requests]
    input_ids, mask = left_padded(prompts, tokenizer.pad_token_id or 0, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    active = list(range(len(rows)))  # indices into `rows` of the rows still in the batch, in batch order
    cache = sampler = None
    stops = set(stop_ids)
    while active:
        # logits_to_keep=1: the prefill needs only the last position, not [rows, prompt, vocab] of logits.
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        if sampler is None:  # the vocabulary size is the logits' width, which may exceed len(tokenizer)
            sampler = BatchSampler([r.settings for r in requests], prompts, logits.shape[-1], device)
        tokens = sampler.next_tokens(logits)
        sampler.record(tokens)
        for slot, token in enumerate(tokens.tolist()):
            row = rows[active[slot]]
            if row.request.cancelled.is_set():
                row.finish_reason = "cancelled"
            else:
                row.advance(token, stops)
        keep = [slot for slot, index in enumerate(active) if rows[index].finish_reason is None]
        for slot, index in enumerate(active):
            if rows[index].finish_reason is not None:
                rows[index].finish()
        if len(keep) < len(active):
            if not keep:
                break
            kept = torch.tensor(keep, device=device)
            cache.batch_select_indices(kept)
            sampler.keep_rows(kept)
            tokens, mask, positions = tokens[kept], mask[kept], positions[kept]
            active = [active[slot] for slot in keep]
        input_ids = tokens.unsqueeze(1)
        mask = torch.cat([mask, torch.ones_like(input_ids)], dim=1)
        positions = positions[:, -1:] + 1
    return [row.outcome for row in rows]


def _budget(request: DecodeRequest, max_context: int | None) -> int:
    budget = request.settings.max_new_tokens
    if max_context:
        budget = min(budget, max_context - len(request.prompt_ids))
    return max(1, budget)

