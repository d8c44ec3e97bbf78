"""The Hugging Face inference engine: generate, stream, batch and score conversations.

Every prompt is rendered through `ChatTemplate`, the same one training used, so the model is served with
exactly the text it was trained on. Chat, the API server, evaluation and the web UI all use this interface;
the vLLM backend (vllm_engine.py) offers the same methods.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

from tunesmith.data.template import ChatTemplate
from tunesmith.errors import TunesmithError
from tunesmith.infer.decoding import decode_batch
from tunesmith.infer.settings import DecodeRequest, DecodeResult, GenerationSettings

__all__ = ["ContextTooLong", "DecodeRequest", "DecodeResult", "Engine", "GenerationSettings", "HfEngine"]


class ContextTooLong(TunesmithError):
    """The conversation does not fit in the model's context."""


class Engine:
    """What every backend shares: rendering, context checks, and generate / batch / stream on top of the
    backend's `run_batch`."""

    backend = "base"

    def __init__(self, template: ChatTemplate, max_context: int | None):
        self.template = template
        self.tokenizer = template.tokenizer
        self.max_context = max_context

    def run_batch(self, requests: list[DecodeRequest], admit=None,
                  max_rows: int = 0) -> list[DecodeResult | Exception]:
        """Decode the requests together; `admit(room)`, where the backend can, supplies more to join
        between steps while fewer than `max_rows` run. A request that fails alone has its exception as its
        outcome, so the others still get theirs."""
        raise NotImplementedError

    def count_tokens(self, messages: list[dict], tools: list | None = None) -> int:
        return len(self.template.prompt_ids(messages, tools))

    def prompt_ids(self, messages: list[dict], tools: list | None = None, images: list[str] | None = None
                   ) -> list[int]:
        """The rendered conversation plus the assistant header, checked to leave room for a reply; with
        images, each `<image>` placeholder of the messages expanded to the next image's tokens."""
        if images:
            from tunesmith.data.media_render import prompt_ids_with_media

            ids = prompt_ids_with_media(self.template, messages, images)
        else:
            ids = self.template.prompt_ids(messages, tools)
        self.check_fits(len(ids))
        return ids

    def check_fits(self, prompt_tokens: int) -> None:
        if prompt_tokens == 0:
            raise TunesmithError("the prompt is empty; give the model some text to continue")
        if self.max_context and prompt_tokens >= self.max_context:
            raise ContextTooLong(
                f"the conversation is {prompt_tokens} tokens, more than the model's context of "
                f"{self.max_context}; clear the history (/clear) or shorten the message"
            )

    def generate(self, messages: list[dict], settings: GenerationSettings | None = None,
                 images: list[str] | None = None) -> str:
        return "".join(self.stream(messages, settings, images))

    def generate_batch(self, conversations: list[list[dict]], settings: GenerationSettings | None = None) -> list[str]:
        """Replies to several conversations, decoded together in one left-padded batch."""
        settings = settings or GenerationSettings()
        requests = [DecodeRequest(self.prompt_ids(messages), settings) for messages in conversations]
        return [_raised(outcome).text for outcome in self.run_batch(requests)]

    def stream(self, messages: list[dict], settings: GenerationSettings | None = None,
               images: list[str] | None = None) -> Iterator[str]:
        """Yield the reply text piece by piece as it is generated. Closing the iterator stops generation.
        `images`: the files the messages' `<image>` placeholders stand for, in order."""
        request = DecodeRequest(self.prompt_ids(messages, images=images), settings or GenerationSettings())
        if images:
            request.pixels = self.template.media.pixels(images)
        pieces: queue.Queue = queue.Queue()
        request.on_text = pieces.put
        failure: list[BaseException] = []
        done = object()

        def work():
            try:
                _raised(self.run_batch([request])[0])
            except BaseException as err:  # surfaced to the caller below, not lost in the thread
                failure.append(err)
            finally:
                pieces.put(done)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while (piece := pieces.get()) is not done:
                yield piece
        finally:
            request.cancelled.set()
            thread.join()
        if failure:
            raise failure[0]


def _raised(outcome: DecodeResult | Exception) -> DecodeResult:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class HfEngine(Engine):
    backend = "hf"

    def __init__(self, model, template: ChatTemplate):
        super().__init__(template, getattr(model.config, "max_position_embeddings", None))
        self.model = model.eval()

    def run_batch(self, requests: list[DecodeRequest], admit=None,
                  max_rows: int = 0) -> list[DecodeResult | Exception]:
        """Decode prompt ids together; each request's `on_text` receives its text as it becomes final."""
        for request in requests:
            self.check_fits(len(request.prompt_ids))
        if any(request.pixels is not None for request in requests):  # image prompts decode one at a time
            return [decode_batch(self.model, self.tokenizer, [request], self.template.stop_token_ids(),
                                 self.max_context)[0] for request in requests]
        return decode_batch(self.model, self.tokenizer, requests, self.template.stop_token_ids(), self.max_context,
                            admit, max_rows)

    def score(self, messages: list[dict], continuations: list[str]) -> list[float]:
        """Log-likelihood of each continuation as the start of the assistant's reply to `messages`."""
        context = self.template.render(messages, add_generation_prompt=True)
        return [logprob for logprob, _ in self.loglikelihood([(context, c) for c in continuations])]

    def loglikelihood(self, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[tuple[float, bool]]:
        """For each (context, continuation) text pair: the summed log-probability of the continuation's
        tokens and whether greedy decoding would have produced exactly them."""
        encoded = [self._split_tokens(context, continuation) for context, continuation in pairs]
        results: list[tuple[float, bool]] = []
        for start in range(0, len(encoded), batch_size):
            results += self._score_ids(encoded[start:start + batch_size])
        return results

    def _split_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # Tokenize the joined text so the boundary tokens are the ones the model would really see.
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        whole, head = encode(context + continuation), encode(context)
        cut = len(head)
        while cut > 0 and whole[:cut] != head[:cut]:
            cut -= 1
        if cut == 0 or cut == len(whole):
            raise TunesmithError("scoring needs a non-empty context and continuation; give both some text")
        self.check_fits(len(whole) - 1)
        return whole[:cut], whole[cut:]

    @torch.no_grad()
    def _score_ids(self, batch: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One forward pass; the output head only at the positions that predict a continuation token, and one
        read back to the host for the whole batch."""
        device = next(self.model.parameters()).device
        sequences = [context + continuation for context, continuation in batch]
        width = max(len(s) for s in sequences)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        rows, positions, targets = [], [], []
        for row, (context, continuation) in enumerate(batch):  # right padding: positions need no adjusting
            ids[row, :len(context) + len(continuation)] = torch.tensor(context + continuation)
            mask[row, :len(context) + len(continuation)] = 1
            rows += [row] * len(continuation)
            positions += range(len(context) - 1, len(context) + len(continuation) - 1)  # t predicts t + 1
            targets += continuation
        hidden = self.model.get_decoder()(input_ids=ids.to(device), attention_mask=mask.to(device),
                                          use_cache=False).last_hidden_state
        rows_t, targets_t = torch.tensor(rows, device=device), torch.tensor(targets, device=device)
        logprobs = torch.log_softmax(self._head(hidden[rows_t, torch.tensor(positions, device=device)]), -1)
        token_logprobs = logprobs.gather(-1, targets_t.unsqueeze(-1)).squeeze(-1)
        misses = (logprobs.argmax(-1) != targets_t).float()
        totals = torch.zeros(len(batch), device=device).index_add_(0, rows_t, token_logprobs)
        missed = torch.zeros(len(batch), device=device).index_add_(0, rows_t, misses)
        return [(total, not miss) for total, miss in zip(*torch.stack([totals, missed]).tolist())]

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits of the output head (soft-capped where the model caps them, as Gemma 2 does)."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
