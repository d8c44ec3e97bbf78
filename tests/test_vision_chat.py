"""Chatting about images: the engine's cached decoding of an image prompt equals greedy decoding by full
forward passes (M-RoPE positions carried past the prompt), and the terminal chat's --image and /image."""

from __future__ import annotations

import pytest
import torch

from conftest import LF_DATA
from tunesmith.infer.settings import GenerationSettings
from vision_models import build_tiny_qwen2_vl

IMAGE = str((LF_DATA / "mllm_demo_data" / "2.jpg").resolve())  # as the path guard gives it back (links followed)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tunesmith.infer.loader import load_engine

    return load_engine(model=str(build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"), seed=3)))


def test_cached_decoding_of_an_image_prompt_equals_full_forward_greedy(engine):
    messages = [{"role": "user", "content": "<image>What is in the picture?"}]
    steps = 6
    settings = GenerationSettings(max_new_tokens=steps, temperature=0)
    ids = engine.prompt_ids(messages, images=[IMAGE])
    pixels = engine.template.media.pixels([IMAGE])
    expected = []
    with torch.no_grad():
        for _ in range(steps):
            input_ids = torch.tensor([ids + expected])
            types = engine.template.media.token_types(input_ids)
            logits = engine.model(input_ids=input_ids, mm_token_type_ids=types, **pixels).logits
            expected.append(int(logits[0, -1].argmax()))
    stops = set(engine.template.stop_token_ids())
    if any(token in stops for token in expected):
        expected = expected[: next(i for i, token in enumerate(expected) if token in stops)]
    assert len(expected) > 2  # several tokens past the prompt: the M-RoPE offset is exercised
    text = engine.generate(messages, settings, images=[IMAGE])
    assert text == engine.tokenizer.decode(expected, skip_special_tokens=True)


class RecordingEngine:
    """An engine that answers 'ok' and keeps what it was asked."""

    max_context = None

    def __init__(self):
        self.calls = []

    def stream(self, messages, settings, images=None):
        self.calls.append(([dict(m) for m in messages], images))
        yield "ok"

    def count_tokens(self, messages):
        return 1


def test_chat_images_join_the_next_message_and_stay_in_the_conversation(capsys):
    from tunesmith.infer.chat_cli import chat_loop

    lines = iter([f"/image {IMAGE}", "/image missing.jpg", "What is it?", "And now?", "/clear", "Hi", "/exit"])
    engine = RecordingEngine()
    chat_loop(engine, None, GenerationSettings(), read=lambda prompt: next(lines), images=[IMAGE])
    first, second, third = engine.calls
    assert first[0][-1]["content"] == "<image><image>What is it?" and len(first[1]) == 2
    assert second[0][-1]["content"] == "And now?" and second[1] == first[1]  # earlier images stay
    assert third[0] == [{"role": "user", "content": "Hi"}] and third[1] is None
    assert "missing.jpg does not exist" in capsys.readouterr().out


def test_typed_placeholders_are_refused_beside_images_and_plain_text_without(capsys):
    """The web UI's rule in the terminal too: with images in the conversation a typed <image> would take one's
    place, so that message is refused and the images wait for the next one; without images it is text."""
    from tunesmith.errors import TunesmithError
    from tunesmith.infer.chat_cli import answer_once, chat_loop

    lines = iter([f"/image {IMAGE}", "Is <image> a tag?", "What is it?", "/exit"])
    engine = RecordingEngine()
    chat_loop(engine, None, GenerationSettings(), read=lambda prompt: next(lines))
    [(messages, images)] = engine.calls
    assert messages == [{"role": "user", "content": "<image>What is it?"}] and images == [IMAGE]
    assert "a message says <image>, which would stand for an image" in capsys.readouterr().out

    with pytest.raises(TunesmithError, match="would stand for an image"):
        answer_once(RecordingEngine(), "Is <image> a tag?", None, GenerationSettings(), images=[IMAGE])
    text_only = RecordingEngine()
    answer_once(text_only, "Is <image> a tag?", None, GenerationSettings())
    assert text_only.calls == [([{"role": "user", "content": "Is <image> a tag?"}], None)]
