"""What a caller asks of one generation, and what it gets back."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

from tunesmith.errors import TunesmithError


@dataclass
class GenerationSettings:
    # Each description is the help of the matching `tunesmith chat` flag and web UI field.
    max_new_tokens: int = field(default=512, metadata={"description": "Longest reply, in tokens."})
    temperature: float = field(default=0.7, metadata={"description": "Sampling temperature; 0 decodes greedily."})
    top_p: float = field(default=1.0, metadata={"description": "Sample from the smallest set of tokens whose "
                                                "probabilities add up to top_p; 1 keeps all."})
    top_k: int = field(default=0, metadata={"description": "Sample from the k likeliest tokens; 0: no limit."})
    repetition_penalty: float = field(default=1.0, metadata={
        "description": "transformers' multiplicative penalty on every token seen so far; 1: none."})
    stop: list[str] = field(default_factory=list, metadata={"description": "Strings that end the reply."})
    seed: int | None = field(default=None, metadata={"description": "Seed of the sampling; unset: random."})
    presence_penalty: float = field(default=0.0, metadata={
        "description": "OpenAI's: subtracted once from every token generated so far."})
    frequency_penalty: float = field(default=0.0, metadata={
        "description": "OpenAI's: subtracted per occurrence of a token generated so far."})

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
    pixels: dict | None = None  # an image prompt's pixel_values and image_grid_thw (it decodes alone)


@dataclass
class DecodeResult:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string), "length", or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)  # the reply's ids, with the stop token that ended it
