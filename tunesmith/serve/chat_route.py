"""POST /v1/chat/completions: replies to a conversation, whole or streamed as server-sent events."""

from __future__ import annotations

import json
import time

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from tunesmith.errors import TunesmithError
from tunesmith.infer.settings import DecodeResult
from tunesmith.serve.common import (
    SSE_HEADERS, ClientGone, ServerState, completion_id, generation_settings, results_unless_gone, sse, usage,
)
from tunesmith.serve.errors import ApiError, bad_request
from tunesmith.serve.images import decode_image_url
from tunesmith.serve.prompt import ids_keeping_typed_text, image_prompt_ids
from tunesmith.serve.schemas import ChatRequest, Message
from tunesmith.serve.tool_plan import ChoiceStream, ToolPlan, plan_tools


def add_chat_route(app, state: ServerState) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        state.check_model(body.model)
        plan = plan_tools(body, state.engine.template.source)
        prompt_ids, pixels = await state.off_loop(_prompt_ids, state, body, plan)
        state.check_fits(prompt_ids)
        budget = body.max_completion_tokens or body.max_tokens
        settings = generation_settings(body, budget, len(prompt_ids), state.engine)
        submission = state.submit([(prompt_ids, choice) for choice in settings], pixels)
        head = {"id": completion_id("chatcmpl"), "created": int(time.time()), "model": body.model}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _stream(state, submission, plan, head, len(prompt_ids), include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            results = await results_unless_gone(request, state, submission)
        except ClientGone:
            return Response(status_code=499)
        choices = [_choice(index, result, plan) for index, result in enumerate(results)]
        return {**head, "object": "chat.completion", "choices": choices, "usage": usage(len(prompt_ids), results)}


def template_messages(messages: list[Message]) -> list[dict]:
    """OpenAI messages as chat templates expect them (tool-call arguments as objects, roles they know)."""
    rendered = []
    for message in messages:
        item = {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)}}
                for call in message.tool_calls
            ]
        rendered.append(item)
    return rendered


def _arguments(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise bad_request("tool call arguments must be a JSON object", "messages") from None


def _prompt_ids(state: ServerState, body: ChatRequest, plan: ToolPlan) -> tuple[list[int], dict | None]:
    """(prompt ids, the pixels of the request's images or None)."""
    from jinja2 import TemplateError

    template = state.engine.template
    images = [decode_image_url(url, state.image_guard, f"messages.{index}.content")
              for index, message in enumerate(body.messages) for url in message.image_urls()]
    if images and state.engine.backend == "vllm":
        from tunesmith.infer.vllm_engine import IMAGES_NEED_HF

        raise bad_request(IMAGES_NEED_HF, "messages")
    if images and template.media is None:
        raise bad_request("this model is text-only and cannot read images; send text only", "messages")
    try:
        text = template.render(template_messages(body.messages), plan.tools, add_generation_prompt=True)
    except (TemplateError, TunesmithError) as err:
        raise bad_request(f"the model's chat template cannot render these messages: {err}", "messages") from None
    contents = [message.text() for message in body.messages]
    if not images:
        return ids_keeping_typed_text(template.tokenizer, text + plan.prefix, contents), None
    return image_prompt_ids(template, text + plan.prefix, contents, images), template.media.pixels(images)


def _finish_reason(result: DecodeResult, calls: list) -> str:
    return "tool_calls" if calls else result.finish_reason


def _choice(index: int, result: DecodeResult, plan: ToolPlan) -> dict:
    content, calls = plan.read(result.text)
    message = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "finish_reason": _finish_reason(result, calls), "logprobs": None}


async def _stream(state: ServerState, submission, plan: ToolPlan, head: dict, prompt_tokens: int,
                  include_usage: bool):
    def chunk(index: int, delta: dict, finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    streams = [ChoiceStream(plan.gate()) for _ in submission.requests]
    results = []
    try:
        for index in range(len(streams)):
            yield chunk(index, {"role": "assistant", "content": ""})
        async for index, event in submission.events():
            if isinstance(event, str):
                if piece := streams[index].content(event):
                    yield chunk(index, {"content": piece})
                continue
            results.append(event)
            for delta in _closing_deltas(streams[index], event, plan):
                yield chunk(index, delta)
            yield chunk(index, {}, _finish_reason(event, plan.read(event.text)[1]))
        if include_usage:
            yield sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(prompt_tokens, results)})
        yield sse("[DONE]")
    except ApiError as err:
        yield sse(err.body())
    except Exception as err:  # the stream has begun: report in-band, as OpenAI does, rather than cut it off
        yield sse(ApiError(500, f"generation failed: {err}", "server_error", kind="server_error").body())
    finally:
        state.scheduler.withdraw(submission)  # a no-op when all is done; frees the slot if the client left


def _closing_deltas(stream: ChoiceStream, result: DecodeResult, plan: ToolPlan) -> list[dict]:
    """What the gate held back: parsed tool calls, or the held text itself when it held no valid call."""
    content, calls = plan.read(result.text)
    if calls:
        return [{"tool_calls": [dict(call, index=i) for i, call in enumerate(calls)]}]
    shown = "".join(stream.shown)
    rest = (plan.prefix + result.text)[len(shown):] if stream.gate else ""
    return [{"content": rest}] if rest else []
