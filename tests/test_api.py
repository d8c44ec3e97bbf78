"""The OpenAI-compatible API, driven by the official `openai` client against a live server on loopback."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import torch

from conftest import build_tiny_model
from tunesmith.infer.engine import GenerationSettings
from tunesmith.infer.loader import load_engine
from tunesmith.serve.app import build_app
from tunesmith.serve.common import ServerOptions
from tunesmith.serve.run import BackgroundServer

KEY = "test-key-123"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, smollm2_dir):
    folder = build_tiny_model(tmp_path_factory.mktemp("lively"), smollm2_dir, initializer_range=0.5)
    return load_engine(str(folder))


@pytest.fixture(scope="module")
def server(engine):
    app = build_app(engine, ServerOptions(model_name="tiny", api_key=KEY, max_body_bytes=64 * 1024))
    with BackgroundServer(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def hf_greedy(engine, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = engine.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=engine.template.stop_token_ids(), pad_token_id=engine.tokenizer.pad_token_id)
    return out[0, len(prompt):].tolist()


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_reply_and_usage_match_transformers(client, engine):
    reply = client.chat.completions.create(model="tiny", messages=HI, temperature=0, max_completion_tokens=6)
    prompt = engine.template.prompt_ids(HI)
    tokens = hf_greedy(engine, prompt, 6)
    assert reply.choices[0].message.content == engine.tokenizer.decode(tokens, skip_special_tokens=True)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), 6)
    assert reply.usage.total_tokens == len(prompt) + 6


def test_streaming_matches_the_whole_reply(client):
    whole = client.chat.completions.create(model="tiny", messages=HI, temperature=0, max_tokens=8)
    chunks = list(client.chat.completions.create(model="tiny", messages=HI, temperature=0, max_tokens=8,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_n_choices_and_seed(client):
    reply = client.chat.completions.create(model="tiny", messages=HI, n=2, seed=5, temperature=1.0, max_tokens=5)
    again = client.chat.completions.create(model="tiny", messages=HI, n=2, seed=5, temperature=1.0, max_tokens=5)
    assert [c.index for c in reply.choices] == [0, 1]
    assert [c.message.content for c in reply.choices] == [c.message.content for c in again.choices]
    assert reply.usage.completion_tokens == 10


def test_stop_string_ends_the_reply_before_it(client):
    full = client.chat.completions.create(model="tiny", messages=HI, temperature=0, max_tokens=8).choices[0]
    text = full.message.content
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = client.chat.completions.create(model="tiny", messages=HI, temperature=0, max_tokens=8, stop=[stop])
    assert cut.choices[0].message.content == text.split(stop)[0]
    assert cut.choices[0].finish_reason == "stop"


def test_text_completion_matches_transformers(client, engine):
    reply = client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=5)
    prompt = engine.tokenizer("Once upon a time")["input_ids"]
    assert reply.choices[0].text == engine.tokenizer.decode(hf_greedy(engine, prompt, 5), skip_special_tokens=True)
    streamed = client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=5,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_every_route_refuses_a_missing_or_wrong_key(server):
    app, url = server
    routes = [(method, route.path.replace("{name:path}", "tiny"))
              for route in app.routes if hasattr(route, "methods") for method in route.methods]
    routes.append(("GET", "/v1/not-a-route"))
    assert len(routes) >= 5
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = httpx.request(method, url + path, headers=headers, json={}, timeout=10)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_unknown_model_and_bad_fields(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=HI)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=HI, temperature=7)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=HI, extra_body={"temprature": 0.5})
    assert err.value.param == "temprature" and err.value.code == "unknown_parameter"
    with pytest.raises(openai.BadRequestError) as err:  # no route fetches what a client names
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])
    assert err.value.param.startswith("messages.0.content")
    response = httpx.get(server[1] + "/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert response.status_code == 404 and "error" in response.json()


def test_cors_is_off_unless_configured(server, engine):
    preflight = {"Origin": "http://page.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    response = httpx.options(server[1] + "/v1/chat/completions", headers=preflight, timeout=10)
    assert "access-control-allow-origin" not in response.headers
    app = build_app(engine, ServerOptions(model_name="tiny", api_key=KEY, cors_origins=["http://page.test"]))
    with BackgroundServer(app) as url:
        response = httpx.options(url + "/v1/chat/completions", headers=preflight, timeout=10)
        assert response.headers["access-control-allow-origin"] == "http://page.test"
        other = httpx.options(url + "/v1/chat/completions", headers=dict(preflight, Origin="http://evil.test"))
        assert other.headers.get("access-control-allow-origin") != "http://evil.test"


def test_too_long_prompts_and_bodies(client, server):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 600}])
    assert err.value.code == "context_length_exceeded"
    huge = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = httpx.post(server[1] + "/v1/chat/completions", json=huge,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_thirty_two_concurrent_streams_all_complete(server):
    async def one(client, i):
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=6, stream=True,
            temperature=0.8, seed=i)
        pieces, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        return "".join(pieces), finish

    async def all_of_them():
        client = openai.AsyncOpenAI(base_url=server[1] + "/v1", api_key=KEY, max_retries=0, timeout=120)
        return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(32))), timeout=240)

    results = asyncio.run(all_of_them())
    assert len(results) == 32 and all(finish in ("stop", "length") for _, finish in results)


class SlowEngine:
    """The real engine, slowed per token and recording results, to watch queueing and cancellation."""

    def __init__(self, engine, delay_s: float):
        self.engine, self.delay_s, self.results = engine, delay_s, []
        self.template, self.max_context = engine.template, engine.max_context

    def check_fits(self, tokens):
        self.engine.check_fits(tokens)

    def run_batch(self, requests, admit=None, max_rows=0):
        import time

        def slowed(requests):
            for request in requests:
                forward = request.on_text
                request.on_text = lambda piece, forward=forward: (time.sleep(self.delay_s), forward(piece))
            return requests

        results = self.engine.run_batch(slowed(requests), lambda room: slowed(admit(room)), max_rows)
        self.results += results
        return results


def test_full_queue_is_429_and_a_disconnect_frees_its_slot(engine):
    import time

    slow = SlowEngine(engine, delay_s=0.02)
    app = build_app(slow, ServerOptions(model_name="tiny", api_key=KEY, max_batch=1, max_waiting=1))
    headers = {"Authorization": f"Bearer {KEY}"}
    long_request = {"model": "tiny", "messages": HI, "max_tokens": 400, "stream": True, "temperature": 0}
    with BackgroundServer(app) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=long_request) as running:
            events = (line for line in running.iter_lines() if line.startswith("data:"))
            next(events), next(events)  # the role chunk, then text: decoding has started, the batch slot is taken
            with http.stream("POST", "/v1/chat/completions", json=long_request) as waiting:
                assert waiting.status_code == 200  # queued in the one waiting place
                busy = http.post("/v1/chat/completions", json=dict(long_request, stream=False))
                assert busy.status_code == 429 and int(busy.headers["Retry-After"]) >= 1
                assert busy.json()["error"]["code"] == "rate_limit_exceeded"
        deadline = time.monotonic() + 20
        while not slow.results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.results and slow.results[0].finish_reason == "cancelled"
        assert slow.results[0].completion_tokens < 400
        quick = http.post("/v1/chat/completions", json={"model": "tiny", "messages": HI, "max_tokens": 2})
        assert quick.status_code == 200


def test_api_command_refuses_an_open_address_without_a_key(tiny_model_dir, capsys, monkeypatch):
    from tunesmith.cli import main

    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    assert main(["api", "--model", str(tiny_model_dir), "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err
