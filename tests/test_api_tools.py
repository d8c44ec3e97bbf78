"""Tool calls through the API: a scripted model behind Qwen3's real tokenizer and chat template.

A random tiny model never writes a tool call, so the model here follows a script (a fixed reply per turn)
while everything around it is real: template rendering of tools and tool results, batched decoding, parsing
of `<tool_call>` blocks, and the OpenAI client on the other end.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import openai
import pytest
import torch
from transformers import AutoTokenizer

from conftest import TOKENIZERS
from tunesmith.data.template import ChatTemplate
from tunesmith.infer.decoding import cache_field
from tunesmith.infer.engine import HfEngine
from tunesmith.infer.tool_calls import HERMES, ContentGate, tool_call_format
from tunesmith.serve.app import build_app
from tunesmith.serve.common import ServerOptions
from tunesmith.serve.run import BackgroundServer

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ANSWER = "It is 21C in Paris."
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


class _NoCache:
    def batch_select_indices(self, rows):
        pass


class ScriptedLM(torch.nn.Module):
    """Answers with a tool call, or, once the prompt holds a tool response, with ANSWER; then ends the turn."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the engine a device to read
        self.config = SimpleNamespace(max_position_embeddings=4096)
        self.prompts: list[str] = []
        self.script: list[int] = []
        self.step = 0

    def forward(self, input_ids, **_):
        if input_ids.shape[1] > 1:  # a new prompt: choose the script for it
            prompt = self.tokenizer.decode(input_ids[0])
            self.prompts.append(prompt)
            reply = ANSWER if "<tool_response>" in prompt else CALL
            self.script = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            self.script.append(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
            self.step = 0
        token = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        logits = torch.full((input_ids.shape[0], 1, len(self.tokenizer)), -1e4)  # sampling too follows the script
        logits[:, -1, token] = 0.0
        return SimpleNamespace(logits=logits, **{cache_field(): _NoCache()})  # the name the engine reads


@pytest.fixture(scope="module")
def scripted():
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen3")
    model = ScriptedLM(tokenizer)
    app = build_app(HfEngine(model, ChatTemplate(tokenizer)), ServerOptions(model_name="scripted", api_key="k"))
    with BackgroundServer(app) as url:
        yield model, openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=60)


def test_tool_call_round_trip(scripted):
    model, client = scripted
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert '"name": "get_weather"' in model.prompts[-1]  # the template showed the tool to the model

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "21C"}]
    second = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL], temperature=0)
    assert second.choices[0].message.content == ANSWER and second.choices[0].finish_reason == "stop"
    assert "<tool_response>\n21C\n</tool_response>" in model.prompts[-1]
    assert CALL.split("\n")[1] in model.prompts[-1]  # the earlier call went back to the model as it was made


def test_streamed_tool_call_arrives_whole_and_never_as_text(scripted):
    _, client = scripted
    chunks = list(client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert "<tool_call>" not in text and "<tool" not in text
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_leaves_the_reply_as_text(scripted):
    _, client = scripted
    reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Weather?"}],
                                           tools=[WEATHER_TOOL], tool_choice="none")
    assert reply.choices[0].message.content == CALL and not reply.choices[0].message.tool_calls


def test_parsing_keeps_malformed_blocks_as_content_and_gate_holds_partial_tags():
    assert tool_call_format("... <tool_call> ... </tool_call> ...") is HERMES
    assert tool_call_format("{{ messages }}") is None
    content, calls = HERMES.split("Sure. <tool_call>{not json}</tool_call>")
    assert calls == [] and content == "Sure. <tool_call>{not json}</tool_call>"
    content, calls = HERMES.split('Hi <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
    assert content == "Hi" and json.loads(calls[0]["function"]["arguments"]) == {"x": 1}
    gate = ContentGate("<tool_call>")
    shown = [gate.feed(piece) for piece in ["Hel", "lo <to", "ol_c", "all>{..."]]
    assert "".join(shown) == "Hello " and gate.closed
