"""Training renders exactly what each tokenizer's own apply_chat_template renders, and trains exactly the
assistant turns (content plus the token that closes the turn)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tests.conftest import TOKENIZERS
from tunesmith.data.records import Conversation
from tunesmith.data.template import IGNORE, ChatTemplate

SINGLE = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "7"},
]
MULTI = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Tuna, made by Acme."},
    {"role": "user", "content": "Say 'assistant' twice."},
    {"role": "assistant", "content": "assistant assistant"},
]

# What each model family writes to close an assistant turn, from the families' published chat formats.
TURN_END = {"smollm2": "<|im_end|>\n", "qwen3": "<|im_end|>\n", "llama3_1": "<|eot_id|>"}


@pytest.fixture(scope="module", params=["smollm2", "qwen3", "llama3_1"])
def tokenizer(request, smollm2_dir):
    folder = smollm2_dir if request.param == "smollm2" else TOKENIZERS / request.param
    return request.param, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single-turn", "multi-turn"])
def test_rendering_equals_apply_chat_template(tokenizer, messages):
    name, tok = tokenizer
    encoded = ChatTemplate(tok).encode(Conversation(messages))

    assert ChatTemplate(tok).render(messages) == tok.apply_chat_template(messages, tokenize=False)
    reference = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert encoded.input_ids == list(reference)


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single-turn", "multi-turn"])
def test_labels_cover_exactly_the_assistant_turns(tokenizer, messages):
    name, tok = tokenizer
    encoded = ChatTemplate(tok).encode(Conversation(messages))

    trained = [i for i, label in enumerate(encoded.labels) if label != IGNORE]
    assert all(encoded.labels[i] == encoded.input_ids[i] for i in trained)
    expected = "".join(m["content"] + TURN_END[name] for m in messages if m["role"] == "assistant")
    assert tok.decode([encoded.input_ids[i] for i in trained]) == expected


def test_no_doubled_bos(tokenizer):
    name, tok = tokenizer
    encoded = ChatTemplate(tok).encode(Conversation(SINGLE))
    if tok.bos_token_id is not None:
        assert encoded.input_ids[:2].count(tok.bos_token_id) <= 1


def test_prompt_ids_end_with_the_assistant_header(tokenizer):
    name, tok = tokenizer
    template = ChatTemplate(tok)
    prompt = SINGLE[:-1]
    expected = tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert template.prompt_ids(prompt) == list(expected["input_ids"])
