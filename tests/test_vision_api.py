"""Images through the OpenAI-compatible API: inline data: URLs answered as the engine answers the same image;
local files only inside --image-folder; URLs never fetched; a larger body limit only for image requests."""

from __future__ import annotations

import base64
import shutil

import httpx
import pytest

from conftest import LF_DATA
from tunesmith.infer.settings import GenerationSettings
from tunesmith.serve.app import build_app
from tunesmith.serve.common import ServerOptions
from tunesmith.serve.run import BackgroundServer
from vision_models import build_tiny_qwen2_vl

KEY = "test-key"
IMAGE = LF_DATA / "mllm_demo_data" / "3.jpg"
TEXT_LIMIT = 16 * 1024  # smaller than the image's base64


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tunesmith.infer.loader import load_engine

    return load_engine(model=str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"), seed=3)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    shutil.copy(IMAGE, allowed / "photo.jpg")
    return allowed


@pytest.fixture(scope="module")
def http(engine, folder):
    options = ServerOptions(model_name="vl", api_key=KEY, max_body_bytes=TEXT_LIMIT, image_folders=[str(folder)])
    with BackgroundServer(build_app(engine, options)) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        yield client


def ask(http, url: str, text: str = "What is this?"):
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return http.post("/v1/chat/completions", json={"model": "vl", "max_tokens": 5, "temperature": 0,
                                                   "messages": [{"role": "user", "content": parts}]})


def data_url() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(IMAGE.read_bytes()).decode()


def test_an_inline_image_is_answered_as_the_engine_answers_it(http, engine):
    assert len(data_url()) > TEXT_LIMIT  # the image request uses the larger limit
    response = ask(http, data_url())
    assert response.status_code == 200, response.text
    expected = engine.generate([{"role": "user", "content": "<image>What is this?"}],
                               GenerationSettings(max_new_tokens=5, temperature=0), images=[str(IMAGE)])
    assert response.json()["choices"][0]["message"]["content"] == expected


def test_local_files_only_inside_the_allowed_folders(http, engine, folder):
    assert ask(http, str(folder / "photo.jpg")).status_code == 200
    outside = ask(http, str(IMAGE))
    assert outside.status_code == 400 and "outside the allowed folders" in outside.text


def test_urls_are_never_fetched(http):
    response = ask(http, "http://127.0.0.1:9/secret.png")
    assert response.status_code == 400 and "never fetched" in response.text


def test_local_files_are_refused_without_the_flag(engine):
    options = ServerOptions(model_name="vl", api_key=KEY)
    with BackgroundServer(build_app(engine, options)) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        response = ask(client, str(IMAGE))
    assert response.status_code == 400 and "--image-folder" in response.text


def test_a_large_body_without_images_keeps_the_small_limit(http):
    response = http.post("/v1/chat/completions", json={"model": "vl", "max_tokens": 1, "messages": [
        {"role": "user", "content": "x" * (TEXT_LIMIT + 1)}]})
    assert response.status_code == 413


def test_image_requests_to_the_vllm_backend_say_images_are_served_by_hf_only(engine):
    """vLLM gets text prompts only: an image request is refused as such, not as one for a text-only model."""
    import copy

    from tunesmith.errors import TunesmithError
    from tunesmith.infer.vllm_engine import VllmEngine

    as_vllm = copy.copy(engine)
    as_vllm.backend = "vllm"  # the route decides by the engine's backend; vLLM itself needs a GPU
    with BackgroundServer(build_app(as_vllm, ServerOptions(model_name="vl", api_key=KEY))) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        response = ask(client, data_url())
    assert response.status_code == 400 and "served by the hf backend only" in response.text
    assert "text-only" not in response.text
    with pytest.raises(TunesmithError, match="served by the hf backend only"):  # chat --image with --backend vllm
        VllmEngine.prompt_ids(as_vllm, [{"role": "user", "content": "<image>Hi"}], images=[str(IMAGE)])
