"""What the chat and text completion routes share: server state, settings from a request, waiting for
results while watching for the client going away, and server-sent events."""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tunesmith.errors import TunesmithError
from tunesmith.infer.settings import DecodeResult, GenerationSettings
from tunesmith.serve.errors import ApiError, bad_request, queue_full, unknown_model
from tunesmith.serve.scheduler import BatchScheduler, QueueFull, Submission


UNBOUNDED_CONTEXT_LIMIT = 4096  # reply budget for a model whose config states no context length
SEEDS = 2**63  # seeds are in [0, SEEDS), the range torch's generators take


@dataclass
class ServerOptions:
    model_name: str  # the id clients put in "model"
    api_key: str | None = None  # None: no key asked (only sensible on a loopback address)
    max_batch: int = 8  # requests decoded together
    max_waiting: int = 64  # requests queued beyond that before answering 429
    max_body_bytes: int = 4 * 1024 * 1024
    max_image_body_bytes: int = 32 * 1024 * 1024  # the limit for a request with image parts (base64 images)
    image_folders: list[str] = field(default_factory=list)  # where local image files may be read; empty: none
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers at all
    retry_after_s: int = 2

    def __post_init__(self):
        if "*" in self.cors_origins and not self.api_key:
            raise TunesmithError("CORS for every origin ('*') without an API key would let any web page a user "
                                 "visits use this server; set an API key or name the allowed origins")


@dataclass
class ServerState:
    engine: object
    options: ServerOptions
    scheduler: BatchScheduler
    created: int = field(default_factory=lambda: int(time.time()))
    # Tokenizing a long prompt takes milliseconds to seconds: done here, not on the event loop, and one at
    # a time so the tokenizer is never used by two request threads at once.
    tokenizing: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-tokenize"))

    async def off_loop(self, work, *args):
        """`work(*args)` on the tokenizing thread, awaited without blocking other requests."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenizing, functools.partial(work, *args))

    def check_model(self, name: str) -> None:
        if name != self.options.model_name:
            raise unknown_model(name, self.options.model_name)

    def check_fits(self, prompt_ids: list[int], param: str = "messages") -> None:
        try:
            self.engine.check_fits(len(prompt_ids))
        except TunesmithError as err:
            code = "context_length_exceeded" if len(prompt_ids) else "invalid_value"
            raise ApiError(400, str(err).split(";")[0], code, param) from None

    @functools.cached_property
    def image_guard(self):
        """What decides which local image files a request may name: None (none) unless --image-folder."""
        from tunesmith.path_guard import PathGuard

        return PathGuard(self.options.image_folders) if self.options.image_folders else None

    def submit(self, choices: list[tuple[list[int], GenerationSettings]], pixels: dict | None = None) -> Submission:
        submission = Submission(choices, pixels)
        try:
            self.scheduler.submit(submission)
        except QueueFull:
            raise queue_full(self.options.retry_after_s) from None
        return submission


def generation_settings(body, max_tokens: int | None, prompt_tokens: int, engine) -> list[GenerationSettings]:
    """One GenerationSettings per choice; with a seed, choice i uses seed + i so choices differ reproducibly."""
    room = engine.max_context - prompt_tokens if engine.max_context else None
    limit = max_tokens or room or UNBOUNDED_CONTEXT_LIMIT  # like OpenAI: by default, up to the context's end
    if room is not None:
        limit = min(limit, room)
    vocabulary = len(engine.template.tokenizer)
    if body.top_k and body.top_k > vocabulary:
        raise bad_request(f"top_k is {body.top_k}; it must be at most the vocabulary size, {vocabulary}", "top_k")
    try:
        return [
            GenerationSettings(
                max_new_tokens=limit,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                top_k=body.top_k or 0,
                repetition_penalty=body.repetition_penalty or 1.0,
                stop=list(body.stop or []),
                seed=None if body.seed is None else (body.seed + choice) % SEEDS,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
            )
            for choice in range(body.n)
        ]
    except TunesmithError as err:
        raise bad_request(str(err)) from None


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def results_unless_gone(request, state: ServerState, submission: Submission) -> list[DecodeResult]:
    """Wait for every choice; if the client disconnects meanwhile, withdraw the work and stop."""
    task = asyncio.ensure_future(submission.results())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            state.scheduler.withdraw(submission)


def completion_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(prompt_tokens: int, results: list[DecodeResult]) -> dict:
    completion = sum(result.completion_tokens for result in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
