"""The Hugging Face inference engine: generate and stream replies to conversations."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch

from tunesmith.data.template import ChatTemplate
from tunesmith.errors import TunesmithError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


class ContextTooLong(TunesmithError):
    """The conversation does not fit in the model's context."""


class HfEngine:
    def __init__(self, model, template: ChatTemplate):
        self.model = model.eval()
        self.template = template
        self.tokenizer = template.tokenizer
        self.max_context = getattr(model.config, "max_position_embeddings", None)

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.template.prompt_ids(messages))

    def generate(self, messages: list[dict], settings: GenerationSettings | None = None) -> str:
        return "".join(self.stream(messages, settings))

    def stream(self, messages: list[dict], settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yield the reply text piece by piece as it is generated."""
        from transformers import TextIteratorStreamer

        settings = settings or GenerationSettings()
        prompt = self.template.prompt_ids(messages)
        self._check_fits(len(prompt))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(prompt, settings, streamer)
        failure: list[BaseException] = []

        def work():
            try:
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as err:  # surfaced to the caller below, not lost in the thread
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failure:
            raise failure[0]

    def _check_fits(self, prompt_tokens: int) -> None:
        if self.max_context and prompt_tokens >= self.max_context:
            raise ContextTooLong(
                f"the conversation is {prompt_tokens} tokens, more than the model's context of "
                f"{self.max_context}; clear the history (/clear) or shorten the message"
            )

    def _generate_kwargs(self, prompt: list[int], settings: GenerationSettings, streamer) -> dict:
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([prompt], device=device)
        max_new = settings.max_new_tokens
        if self.max_context:
            max_new = max(1, min(max_new, self.max_context - len(prompt)))
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        sampling = settings.temperature > 0
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new,
            "do_sample": sampling,
            "repetition_penalty": settings.repetition_penalty,
            "eos_token_id": self.template.stop_token_ids(),
            "pad_token_id": self.tokenizer.pad_token_id,
            "streamer": streamer,
        }
        if sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None)
        if settings.stop:
            kwargs.update(stop_strings=settings.stop, tokenizer=self.tokenizer)
        return kwargs
