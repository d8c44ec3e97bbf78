"""POST /v1/completions: raw text continuation, no chat template."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from tunesmith.serve.common import (
    SSE_HEADERS, ClientGone, ServerState, completion_id, generation_settings, results_unless_gone, sse, usage,
)
from tunesmith.serve.errors import ApiError
from tunesmith.serve.schemas import CompletionRequest


def add_completions_route(app, state: ServerState) -> None:
    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        state.check_model(body.model)
        tokenizer = state.engine.template.tokenizer
        prompts = await state.off_loop(lambda: [tokenizer(text)["input_ids"] for text in body.prompt])
        choices = []
        for prompt_ids in prompts:
            state.check_fits(prompt_ids, "prompt")
            choices += [(prompt_ids, s) for s in generation_settings(body, body.max_tokens, len(prompt_ids), state.engine)]
        prompt_tokens = sum(len(p) for p in prompts)
        submission = state.submit(choices)
        head = {"id": completion_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": body.model}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _stream(state, submission, head, prompt_tokens, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            results = await results_unless_gone(request, state, submission)
        except ClientGone:
            return Response(status_code=499)
        texts = [_choice(index, result.text, result.finish_reason) for index, result in enumerate(results)]
        return {**head, "choices": texts, "usage": usage(prompt_tokens, results)}


def _choice(index: int, text: str, finish: str | None) -> dict:
    return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}


async def _stream(state: ServerState, submission, head: dict, prompt_tokens: int, include_usage: bool):
    results = []
    try:
        async for index, event in submission.events():
            if isinstance(event, str):
                yield sse({**head, "choices": [_choice(index, event, None)]})
                continue
            results.append(event)
            yield sse({**head, "choices": [_choice(index, "", event.finish_reason)]})
        if include_usage:
            yield sse({**head, "choices": [], "usage": usage(prompt_tokens, results)})
        yield sse("[DONE]")
    except Exception as err:  # the stream has begun: report in-band rather than cut it off
        yield sse(ApiError(500, f"generation failed: {err}", "server_error", kind="server_error").body())
    finally:
        state.scheduler.withdraw(submission)
