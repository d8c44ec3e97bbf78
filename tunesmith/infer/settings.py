"""What a caller asks of one generation, and what it gets back."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

from tunesmith.errors import TunesmithError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k limit
    repetition_penalty: float = 1.0  # transformers' multiplicative penalty on every token seen so far
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token generated so far
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence of a token generated so far

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise TunesmithError(f"max_new_tokens is {self.max_new_tokens}; it must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise TunesmithError(
                "generation settings out of range: temperature >= 0, 0 < top_p <= 1, top_k >= 0, "
                "repetition_penalty > 0"
            )
        numbers = (self.temperature, self.top_p, self.repetition_penalty, self.presence_penalty, self.frequency_penalty)
        if not all(math.isfinite(number) for number in numbers):
            raise TunesmithError("generation settings must be finite numbers (no inf or nan)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise TunesmithError(f"seed is {self.seed}; it must be in [0, 2^63)")


@dataclass(eq=False)  # a request is itself, not its contents: two equal prompts are still two requests
class DecodeRequest:
    """One reply to generate: prompt token ids, settings, and where its text goes as it is produced."""

    prompt_ids: list[int]
    settings: GenerationSettings
    on_text: Callable[[str], None] = lambda text: None  # called with each new piece of final text
    # Called as soon as this row is done, which in a batch may be well before the longest row finishes.
    on_done: Callable[["DecodeResult"], None] = lambda result: None
    cancelled: threading.Event = field(default_factory=threading.Event)  # set it to stop this row early


@dataclass
class DecodeResult:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string), "length", or "cancelled"
    prompt_tokens: int
    completion_tokens: int
