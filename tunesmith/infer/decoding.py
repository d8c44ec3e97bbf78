"""Decode a batch of prompts together, step by step, with left padding and a shared KV cache.

Each row keeps its own settings, stop strings and token budget. A row leaves the batch as soon as it is
done (end of turn, stop string, budget, or cancelled by its caller) and is reported at once; its KV cache
rows go with it. Between steps, new requests can join the running batch (`admit`): they are pre-filled on
their own, then their cache is left-padded to the batch's width and stacked under it, so a request that
arrives mid-batch waits one step, not for the whole batch. A request that cannot even start (its pre-fill
fails) fails alone: its outcome is the exception, and the others decode as if it had never been sent.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from tunesmith.infer.sampling import BatchSampler
from tunesmith.infer.settings import DecodeRequest, DecodeResult
from tunesmith.infer.text_tracker import TextTracker


@functools.cache
def cache_field() -> str:
    """The name of the KV cache, as a forward argument and as an output field. transformers 5.24 renamed it
    from past_key_values to cache (the old name still works but warns, and goes in 5.40); releases before
    that know only past_key_values."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


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
    def __init__(self, request: DecodeRequest, tokenizer, max_context: int | None):
        self.request = request
        self.tracker = TextTracker(tokenizer, request.settings.stop)
        budget = request.settings.max_new_tokens
        if max_context:
            budget = min(budget, max_context - len(request.prompt_ids))
        self.budget = max(1, budget)
        self.finish_reason: str | None = None
        self.stop_token: list[int] = []  # the stop token that ended the reply, once one has
        self.outcome: DecodeResult | None = None

    def advance(self, token: int, stop_ids: set[int]) -> None:
        if self.request.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        if token in stop_ids:
            self.finish_reason, self.stop_token = "stop", [token]
            return
        piece = self.tracker.add(token)
        if piece:
            self._tell(self.request.on_text, piece)
        if self.tracker.stopped:
            self.finish_reason = "stop"
        elif len(self.tracker.ids) >= self.budget:
            self.finish_reason = "length"

    def finish(self) -> None:
        """Hand out the held-back text and the result, as soon as the row is done."""
        rest = self.tracker.finish()
        if rest:
            self._tell(self.request.on_text, rest)
        generated = len(self.tracker.ids) + (self.finish_reason == "stop" and not self.tracker.stopped)
        self.outcome = DecodeResult(self.tracker.text, self.finish_reason, len(self.request.prompt_ids), generated,
                                    self.tracker.ids + self.stop_token)
        self._tell(self.request.on_done, self.outcome)

    def _tell(self, callback, value) -> None:
        # A caller whose callback breaks (its client's loop closed, say) loses its own row, not the batch.
        try:
            callback(value)
        except Exception:
            self.request.cancelled.set()


class _Running:
    """The rows decoding together and their shared state, row i of every tensor being rows[i]."""

    def __init__(self, rows, cache, mask, tokens, sampler, rope_deltas=None):
        self.rows, self.cache, self.mask, self.tokens, self.sampler = rows, cache, mask, tokens, sampler
        self.rope_deltas = rope_deltas  # an image prompt's M-RoPE offset of each row (model/vision.py)

    def step(self, model, stop_ids: set[int]) -> None:
        self.mask = torch.cat([self.mask, torch.ones_like(self.tokens).unsqueeze(1)], dim=1)
        positions = self.mask.sum(dim=1, keepdim=True) - 1
        if self.rope_deltas is not None:  # after an image, text positions run on from the image's extent
            positions = (positions + self.rope_deltas).unsqueeze(0).expand(3, -1, -1)
        out = model(input_ids=self.tokens.unsqueeze(1), attention_mask=self.mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **{cache_field(): self.cache})
        self.cache = getattr(out, cache_field())
        self._take(out.logits[:, -1, :], stop_ids)

    def _take(self, logits: torch.Tensor, stop_ids: set[int]) -> None:
        self.tokens = self.sampler.next_tokens(logits)
        self.sampler.record(self.tokens)
        for row, token in zip(self.rows, self.tokens.tolist()):
            row.advance(token, stop_ids)

    def drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if row.finish_reason is None]
        for row in self.rows:
            if row.finish_reason is not None:
                row.finish()
        if len(keep) < len(self.rows) and keep:
            kept = torch.tensor(keep, device=self.tokens.device)
            self.cache.batch_select_indices(kept)
            self.sampler.keep_rows(kept)
            self.mask, self.tokens = self.mask[kept], self.tokens[kept]
        self.rows = [self.rows[i] for i in keep]

    def absorb(self, other: "_Running") -> None:
        """Stack `other`'s rows under these, left-padding the shorter side's cache and mask to one width."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.sampler.extend(other.sampler)
        self.rows += other.rows


def prefill(model, tokenizer, requests: list[DecodeRequest], max_context, stop_ids: set[int]) -> _Running:
    """Run the prompts and pick each row's first token."""
    device = next(model.parameters()).device
    rows = [_Row(r, tokenizer, max_context) for r in requests]
    prompts = [r.prompt_ids for r in requests]
    input_ids, mask = left_padded(prompts, tokenizer.pad_token_id or 0, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    images, deltas = {}, None
    if requests[0].pixels is not None:  # an image prompt decodes alone (infer/engine.py)
        from tunesmith.model.vision import image_prompt_inputs

        images, positions, deltas = image_prompt_inputs(model, input_ids, mask, requests[0].pixels)
    # logits_to_keep=1: only the last position is needed, not [rows, prompt, vocab] of logits.
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **images)
    logits = out.logits[:, -1, :]
    # The vocabulary size is the logits' width, which may exceed len(tokenizer).
    sampler = BatchSampler([r.settings for r in requests], prompts, logits.shape[-1], device)
    running = _Running(rows, getattr(out, cache_field()), mask, None, sampler, deltas)
    running._take(logits, stop_ids)
    return running


@torch.no_grad()
def decode_batch(model, tokenizer, requests: list[DecodeRequest], stop_ids: list[int], max_context: int | None,
                 admit: Callable[[int], list[DecodeRequest]] | None = None,
                 max_rows: int = 0) -> list[DecodeResult | Exception]:
    """Generate a reply for every request; outcomes in the order the requests started (given, then admitted):
    a DecodeResult, or the exception that kept that request from starting.

    admit(room): called between steps for up to `room` more requests to join, while fewer than `max_rows`
    run. Only for caches that can be stacked (plain full-attention layers); others decode as given."""
    stops = set(stop_ids)
    failures: dict[DecodeRequest, Exception] = {}
    rows: dict[DecodeRequest, _Row] = {}

    def start(batch: list[DecodeRequest]) -> _Running | None:
        started = _prefill_isolating(model, tokenizer, batch, max_context, stops, failures)
        rows.update({row.request: row for row in started.rows} if started else {})
        return started

    order = list(requests)
    running = start(requests)
    can_join = admit is not None and (running is None or _stackable(running.cache))
    while True:
        if running is not None:
            running.drop_finished()
        active = len(running.rows) if running is not None else 0
        newcomers = admit(max_rows - active) if can_join and active < max_rows else []
        if newcomers:
            order += newcomers
            joining = start(newcomers)
            if running is not None and running.rows and joining is not None:
                running.absorb(joining)
            elif joining is not None:
                running = joining
                can_join = _stackable(running.cache)
            continue  # the newcomers already took a token; drop any that finished with it
        if not active:
            return [failures[request] if request in failures else rows[request].outcome for request in order]
        running.step(model, stops)


def _prefill_isolating(model, tokenizer, requests, max_context, stops, failures) -> _Running | None:
    """Pre-fill the requests together; if that fails, find the ones that fail alone (recorded in
    `failures`) and pre-fill the rest together. None when none could start."""
    try:
        return prefill(model, tokenizer, requests, max_context, stops)
    except Exception as err:
        if len(requests) == 1:
            failures[requests[0]] = err
            return None
    healthy = []
    for request in requests:
        try:  # a silent copy: the trial must not send the caller any text
            prefill(model, tokenizer, [DecodeRequest(request.prompt_ids, request.settings)], max_context, stops)
            healthy.append(request)
        except Exception as err:
            failures[request] = err
    return _prefill_isolating(model, tokenizer, healthy, max_context, stops, failures) if healthy else None


def _stackable(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
