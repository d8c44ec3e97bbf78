"""Encoding many conversations at once (one marked rendering per role sequence, one tokenizer call) gives
exactly what encoding each one alone, with a fresh template, gives."""

from __future__ import annotations

from datetime import datetime

import pytest
from transformers import AutoTokenizer

from tests.conftest import LF_DATA, TOKENIZERS
from tunesmith.config.schema import DataConfig
from tunesmith.data.dataset import load_records
from tunesmith.data.records import Conversation
from tunesmith.data.template import ChatTemplate

DATASETS = ["alpaca_en_demo", "glaive_toolcall_en_demo", "identity"]


def demo_conversations() -> list[Conversation]:
    """Single-turn, system-prompted and tool-calling records, in an interleaved order."""
    per_dataset = [load_records(DataConfig(datasets=[name], dataset_dir=str(LF_DATA), max_samples=12))
                   for name in DATASETS]
    return [record for group in zip(*per_dataset) for record in group]


@pytest.mark.parametrize("name", ["qwen3", "llama3_1"])
@pytest.mark.parametrize("options", [{}, {"mask_history": True}, {"train_on_prompt": True}])
def test_batch_equals_one_at_a_time(name, options):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / name)
    conversations = demo_conversations()
    if name == "llama3_1":  # its own template renders tools differently; the plain records suffice there
        conversations = [c for c in conversations if not c.tools]
    batch = ChatTemplate(tokenizer).encode_many(conversations, **options)
    alone = [ChatTemplate(tokenizer).encode_many([conversation], **options)[0] for conversation in conversations]
    assert [(s.input_ids, s.labels) for s in batch] == [(s.input_ids, s.labels) for s in alone]


class FrozenClock:
    """Stands in for the datetime that chat templates read through strftime_now."""

    now_value = datetime(2026, 11, 23, 23, 59)

    @classmethod
    def now(cls):
        return cls.now_value


DATED_TEMPLATE = (  # the way Llama 3.1's template writes the date into its system header
    "<|im_start|>system\nToday is {{ strftime_now('%d %b %Y') }}.<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def test_a_template_whose_glue_changes_overnight_is_rendered_afresh(monkeypatch):
    """A marked rendering remembered from yesterday no longer fits today's text: it is made again."""
    from transformers.utils import chat_template_utils

    monkeypatch.setattr(chat_template_utils, "datetime", FrozenClock)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen3")
    tokenizer.chat_template = DATED_TEMPLATE
    template = ChatTemplate(tokenizer)
    first, second = [c for c in demo_conversations() if not c.tools][:2]
    template.encode(first)
    FrozenClock.now_value = datetime(2026, 11, 24, 0, 1)
    encoded = template.encode(second)
    assert "Today is 24 Nov 2026." in tokenizer.decode(encoded.input_ids)
    fresh = ChatTemplate(tokenizer).encode(second)
    assert (encoded.input_ids, encoded.labels) == (fresh.input_ids, fresh.labels)
