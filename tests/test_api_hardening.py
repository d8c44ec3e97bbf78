"""The API under attack: out-of-range settings, requests that fail inside generation, foreign Host headers,
open CORS, control-token text typed by a client, and the streaming decoder's cost."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from test_api import engine  # noqa: F401 - the module's tiny engine fixture, shared rather than copied
from tunesmith.errors import TunesmithError
from tunesmith.infer.settings import DecodeRequest, GenerationSettings
from tunesmith.serve.app import build_app
from tunesmith.serve.common import ServerOptions
from tunesmith.serve.run import BackgroundServer

KEY = "hardening-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi"}]

# Each bad request: the field to name, and the body's bad part. 16 bad inputs.
BAD_FIELDS = [
    ("seed", {"seed": -1}), ("seed", {"seed": 2**63}), ("top_k", {"top_k": -1}), ("top_k", {"top_k": 10**9}),
    ("temperature", {"temperature": 2.5}), ("temperature", {"temperature": float("nan")}),
    ("top_p", {"top_p": 0}), ("top_p", {"top_p": 1.5}),
    ("presence_penalty", {"presence_penalty": float("inf")}), ("frequency_penalty", {"frequency_penalty": float("nan")}),
    ("frequency_penalty", {"frequency_penalty": -3}),
    ("repetition_penalty", {"repetition_penalty": 0}), ("repetition_penalty", {"repetition_penalty": float("inf")}),
    ("stop", {"stop": "x" * 300}), ("stop", {"stop": ["a", "b", "c", "d", "e"]}), ("n", {"n": 17}),
]


@pytest.fixture(scope="module")
def server(engine):  # test_api's tiny engine, with a batch wide enough for four streams and a newcomer
    app = build_app(engine, ServerOptions(model_name="tiny", api_key=KEY, max_batch=8))
    with BackgroundServer(app) as url:
        yield app, url


def post(url: str, body: dict, headers: dict = AUTH) -> httpx.Response:
    # json.dumps writes nan and inf as NaN / Infinity, which is what a careless client sends.
    return httpx.post(url + "/v1/chat/completions", content=json.dumps(body), timeout=30,
                      headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("field,bad", BAD_FIELDS)
def test_out_of_range_sampling_is_a_400_naming_the_field(server, field, bad):
    response = post(server[1], {"model": "tiny", "messages": HI, "max_tokens": 2, **bad})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field


def test_top_k_up_to_the_vocabulary_is_accepted(server, engine):
    body = {"model": "tiny", "messages": HI, "max_tokens": 2, "top_k": len(engine.tokenizer), "seed": 2**63 - 1, "n": 2}
    assert post(server[1], body).status_code == 200  # seed + 1 for the second choice wraps, not overflows


async def _stream_text(http: httpx.AsyncClient, content: str, started: asyncio.Event | None) -> str:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 48,
            "temperature": 0, "stream": True}
    text = ""
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            text += "".join(choice["delta"].get("content") or "" for choice in chunk["choices"])
            if started is not None and text:
                started.set()
    return text


def test_bad_requests_sent_while_four_streams_run_fail_alone(server):
    app, url = server
    prompts = [f"tell me about {topic}" for topic in ("rivers", "bread", "stars", "music")]

    async def scenario(with_attack: bool) -> list[str]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as http:
            started = [asyncio.Event() for _ in prompts]
            streams = [asyncio.create_task(_stream_text(http, p, e)) for p, e in zip(prompts, started)]
            if with_attack:
                await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 60)
                for _, bad in BAD_FIELDS:
                    body = json.dumps({"model": "tiny", "messages": HI, "stream": True, **bad})
                    answer = await http.post("/v1/chat/completions", content=body,
                                             headers={"Content-Type": "application/json"})
                    assert answer.status_code == 400
                # A request that gets past validation and fails inside generation: token ids beyond the
                # model's embedding, put straight into the running batch.
                broken = app.state.tunesmith.submit([([10**6], GenerationSettings(max_new_tokens=4))])
                with pytest.raises(IndexError):
                    await asyncio.wait_for(broken.results(), 60)
            return await asyncio.wait_for(asyncio.gather(*streams), 180)

    calm = asyncio.run(scenario(False))
    attacked = asyncio.run(scenario(True))
    assert attacked == calm and all(calm)


def test_a_request_that_cannot_start_fails_alone_in_the_engine(engine):
    settings = GenerationSettings(max_new_tokens=5, temperature=0)
    prompts = [engine.template.prompt_ids([{"role": "user", "content": word}]) for word in ("one", "two")]
    alone = [engine.run_batch([DecodeRequest(p, settings)])[0].text for p in prompts]
    given = [DecodeRequest(prompts[0], settings), DecodeRequest([10**6], settings)]
    late = [DecodeRequest([10**6], settings), DecodeRequest(prompts[1], settings)]
    outcomes = engine.run_batch(given, admit=lambda room: [late.pop(0)] if late else [], max_rows=4)
    assert outcomes[0].text == alone[0] and outcomes[3].text == alone[1]
    assert isinstance(outcomes[1], IndexError) and isinstance(outcomes[2], IndexError)


def test_without_a_key_only_loopback_host_names_are_served(engine):
    app = build_app(engine, ServerOptions(model_name="tiny"))
    with BackgroundServer(app) as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
            assert httpx.get(url + "/v1/models", headers={"Host": host}, timeout=10).status_code == 200, host
        for host in (f"attacker.example:{port}", "127.0.0.1.attacker.example", f"192.168.1.5:{port}"):
            refused = httpx.get(url + "/v1/models", headers={"Host": host}, timeout=10)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "host_not_allowed"
    with BackgroundServer(build_app(engine, ServerOptions(model_name="tiny", api_key=KEY))) as url:
        named = httpx.get(url + "/v1/models", headers={**AUTH, "Host": "models.example"}, timeout=10)
        assert named.status_code == 200  # with a key, any name may reach it


def test_cors_for_every_origin_needs_a_key(engine, tiny_model_dir, capsys, monkeypatch):
    with pytest.raises(TunesmithError, match="API key"):
        ServerOptions(model_name="tiny", cors_origins=["*"])
    assert ServerOptions(model_name="tiny", api_key=KEY, cors_origins=["*"]).cors_origins == ["*"]
    from tunesmith.cli import main

    monkeypatch.delenv("TUNESMITH_API_KEY", raising=False)
    assert main(["api", "--model", str(tiny_model_dir), "--cors-origin", "*"]) == 2
    assert "('*') without an API key" in capsys.readouterr().err


def test_prompts_are_tokenized_off_the_event_loop(server, monkeypatch):
    import tunesmith.serve.chat_route as chat_route

    threads = []
    real = chat_route.ids_keeping_typed_text
    monkeypatch.setattr(chat_route, "ids_keeping_typed_text",
                        lambda *args: threads.append(threading.current_thread().name) or real(*args))
    assert post(server[1], {"model": "tiny", "messages": HI, "max_tokens": 1}).status_code == 200
    assert threads and all(name.startswith("tunesmith-tokenize") for name in threads)
