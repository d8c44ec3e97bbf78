"""Built-in templates: each renders, trains exactly the replies, and where a real tokenizer ships the same
format, equals its apply_chat_template in text and tokens."""

from __future__ import annotations

import json

import pytest

from conftest import LF_DATA, TOKENIZERS
from tunesmith.data.records import Conversation
from tunesmith.data.template import IGNORE, ChatTemplate, builtin_template_names
from tunesmith.errors import TunesmithError

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Teal."}, {"role": "user", "content": "Another one?"},
        {"role": "assistant", "content": "Crimson red."}]
REQUIRED = {"default", "alpaca", "vicuna", "chatml", "qwen2_5", "qwen3", "qwen3_nothink", "llama2", "llama3",
            "mistral", "gemma", "chatglm3", "baichuan2", "zephyr", "phi"}


@pytest.fixture(scope="module")
def qwen3():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZERS / "qwen3")


@pytest.fixture(scope="module")
def llama3():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZERS / "llama3_1")


def trained_text(template, encoded):
    return template.tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE])


def test_the_required_templates_exist():
    assert REQUIRED <= set(builtin_template_names())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_builtin_template_trains_the_replies_only(qwen3, name):
    template = ChatTemplate(qwen3, name)
    encoded = template.encode(Conversation(CHAT))
    trained = trained_text(template, encoded)
    assert "Teal." in trained and "Crimson red." in trained
    assert "Name a colour" not in trained and "Another one" not in trained and "terse" not in trained
    text = template.render(CHAT)
    assert qwen3.decode(encoded.input_ids) == text
    last_only = trained_text(template, template.encode(Conversation(CHAT), mask_history=True))
    assert "Crimson red." in last_only and "Teal." not in last_only
    everything = template.encode(Conversation(CHAT), train_on_prompt=True)
    assert everything.labels == everything.input_ids


def conversations():
    glaive = json.loads((LF_DATA / "glaive_toolcall_en_demo.json").read_text())[0]
    return [CHAT, CHAT[1:], CHAT[1:3], glaive]


def qwen3_case(case):
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records

    if isinstance(case, dict):  # the glaive tool-call sample, as the data pipeline converts it
        record = load_records(DataConfig(datasets=["glaive_toolcall_en_demo"], dataset_dir=str(LF_DATA),
                                         max_samples=1))[0]
        return record.messages, record.tools
    return case, None


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("generation", [False, True])
def test_qwen3_builtin_equals_the_tokenizers_template(qwen3, case, generation):
    messages, tools = qwen3_case(conversations()[case])
    if generation:
        messages = messages[:-1]
    ours = ChatTemplate(qwen3, "qwen3")
    theirs = qwen3.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation)
    assert ours.render(messages, tools, add_generation_prompt=generation) == theirs
    ids = qwen3.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=generation,
                                    return_dict=False)
    if generation:
        assert ours.prompt_ids(messages, tools) == list(ids)
    else:
        assert ours.encode(Conversation(messages, tools)).input_ids == list(ids)
    nothink = qwen3.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation,
                                        enable_thinking=False)
    assert ChatTemplate(qwen3, "qwen3_nothink").render(messages, tools, add_generation_prompt=generation) == nothink


def test_qwen3_tool_calls_are_trained(qwen3):
    messages, tools = qwen3_case(conversations()[3])
    template = ChatTemplate(qwen3, "qwen3")
    trained = trained_text(template, template.encode(Conversation(messages, tools)))
    assert '<tool_call>\n{"name": "search_recipes"' in trained
    assert "<tool_response>" not in trained


def test_template_without_tool_support_refuses_tool_data(qwen3):
    messages, tools = qwen3_case(conversations()[3])
    with pytest.raises(TunesmithError, match="drops the tool definitions|has no 'tool' role|does not render tool"):
        ChatTemplate(qwen3, "chatml").encode(Conversation(messages, tools))


@pytest.mark.parametrize("generation", [False, True])
def test_llama3_builtin_equals_llama3_1(llama3, generation):
    messages = CHAT[:-1] if generation else CHAT
    theirs = llama3.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    ours = ChatTemplate(llama3, "llama3")
    assert ours.render(messages, add_generation_prompt=generation) == theirs
    ids = llama3.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation, return_dict=False)
    got = ours.prompt_ids(messages) if generation else ours.encode(Conversation(messages)).input_ids
    assert got == list(ids)


def test_chatml_builtin_equals_smollm2_with_a_system_prompt(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    ours = ChatTemplate(tokenizer, "chatml")
    assert ours.render(CHAT) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    ids = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=False)
    assert ours.encode(Conversation(CHAT)).input_ids == list(ids)
