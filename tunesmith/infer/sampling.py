"""Pick the next token for every row of a batch, each row with its own generation settings.

Rows of one batch come from different requests (temperature, top-p, penalties, seed all differ), so the
logits processing is vectorised over per-row parameter columns instead of one setting for the whole batch.
The order matches transformers' `generate`: penalties, then temperature, top-k, top-p, then sampling.
"""

from __future__ import annotations

import random

import torch

from tunesmith.infer.settings import GenerationSettings


# Per-row tensors, all indexed by batch row.
_ROW_STATE = ("temperature", "top_p", "top_k", "repetition", "presence", "frequency", "seen", "generated_counts")


class BatchSampler:
    """Per-row sampling state for one batch: parameters, token counts for penalties, random generators."""

    def __init__(self, settings: list[GenerationSettings], prompts: list[list[int]], vocab_size: int, device):
        def column(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)

        self.temperature = column([s.temperature for s in settings])
        self.top_p = column([s.top_p for s in settings])
        self.top_k = column([s.top_k for s in settings], torch.long)
        self.repetition = column([s.repetition_penalty for s in settings])
        self.presence = column([s.presence_penalty for s in settings])
        self.frequency = column([s.frequency_penalty for s in settings])
        # Repetition penalty counts prompt tokens too (as transformers does); presence and frequency
        # penalties count only generated tokens (as OpenAI's API does).
        self.seen = torch.zeros(len(settings), vocab_size, dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            self.seen[row, torch.tensor(prompt, dtype=torch.long, device=device)] = True
        self.generated_counts = torch.zeros(len(settings), vocab_size, device=device)
        # Host-side generators: each row's draw is made on the CPU and the batch's draws go to the device in
        # one copy, so sampling never waits for the device (a device generator per row costs a launch each).
        self.generators = [_generator(s.seed) for s in settings]
        self.sampling = [s.temperature > 0 for s in settings]  # host copy: no device read to decide
        # Over a large vocabulary these passes cost more than the model step of a small model: skip the no-ops.
        self.penalties = any(s.repetition_penalty != 1 or s.presence_penalty or s.frequency_penalty for s in settings)
        self.filters = any(s.top_k or s.top_p < 1 for s in settings)

    def next_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """One token id per row, from the last-position logits [rows, vocab]."""
        logits = self.penalize(logits.float())
        greedy = logits.argmax(dim=-1)
        if not any(self.sampling):
            return greedy
        probs = torch.softmax(self.warp(logits), dim=-1)
        uniforms = torch.cat([torch.rand(1, dtype=torch.float64, generator=g) for g in self.generators])
        sampled = inverse_cdf(probs, uniforms.to(logits.device, non_blocking=True))
        return torch.where(self.temperature.squeeze(1) > 0, sampled, greedy)

    def penalize(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.penalties:
            return logits
        penalised = torch.where(logits > 0, logits / self.repetition, logits * self.repetition)
        logits = torch.where(self.seen, penalised, logits)
        return logits - self.presence * (self.generated_counts > 0) - self.frequency * self.generated_counts

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k and top-p for the sampling rows: filtered-out tokens get -inf."""
        logits = logits / self.temperature.clamp(min=1e-5)
        if not self.filters:
            return logits
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        rank = torch.arange(logits.shape[-1], device=logits.device).unsqueeze(0)
        beyond_k = (self.top_k > 0) & (rank >= self.top_k)
        sorted_logits = sorted_logits.masked_fill(beyond_k, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        beyond_p = (mass_before >= self.top_p) & (rank > 0)  # the most likely token always stays
        sorted_logits = sorted_logits.masked_fill(beyond_p, float("-inf"))
        return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)

    def record(self, tokens: torch.Tensor) -> None:
        """Count the tokens just generated, for the penalties of the next step."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        self.seen[rows, tokens] = True
        self.generated_counts[rows, tokens] += 1

    def extend(self, other: "BatchSampler") -> None:
        """Append the rows of another sampler (requests joining a running batch)."""
        for name in _ROW_STATE:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.generators += other.generators
        self.sampling += other.sampling
        self.penalties |= other.penalties
        self.filters |= other.filters

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop the rows that finished, keeping the others in order."""
        for name in _ROW_STATE:
            setattr(self, name, getattr(self, name)[rows])
        kept = rows.tolist()
        self.generators = [self.generators[i] for i in kept]
        self.sampling = [self.sampling[i] for i in kept]


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from `probs` [rows, vocab] with the row's uniform number in [0, 1): the first
    token whose cumulative probability exceeds it (a zero-probability token can never be that one)."""
    cdf = probs.double().cumsum(dim=-1)
    threshold = (uniforms * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, threshold, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else random.SystemRandom().getrandbits(63))
    return generator
