"""The one template mechanism: a jinja chat template rendered to (input_ids, labels).

Training, chat and export all render through `ChatTemplate`, so a model is served with exactly the text it
was trained on. The trained spans are found without any per-template knowledge: the conversation is rendered
once more with every message's content replaced by a sentinel, which shows where each content lands in the
real rendering; an assistant turn is trained from its content through the text that closes the turn (the
end-of-turn token), never the header that opens it.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path

from tunesmith.data.records import Conversation, Encoded
from tunesmith.errors import TunesmithError

BUILTIN_DIR = Path(__file__).parent / "templates"
# Private-use code points: no tokenizer or dataset gives them meaning, so they cannot collide with text.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
IGNORE = -100


def builtin_template_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.jinja"))


def resolve_template_source(tokenizer, name: str) -> str:
    """The jinja source for `name`: the tokenizer's own for 'auto', else a built-in file."""
    if name == "auto":
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.chat_template
        raise TunesmithError(
            "the tokenizer has no chat template; set model.template to a built-in one: "
            + ", ".join(builtin_template_names())
        )
    path = BUILTIN_DIR / f"{name}.jinja"
    if not path.is_file():
        raise TunesmithError(
            f"unknown template '{name}'; use 'auto' or one of: {', '.join(builtin_template_names())}"
        )
    return path.read_text(encoding="utf-8")


class ChatTemplate:
    """A tokenizer plus a jinja chat template, able to render for training and for generation."""

    def __init__(self, tokenizer, name: str = "auto"):
        self.tokenizer = tokenizer
        self.name = name
        self.source = resolve_template_source(tokenizer, name)

    def render(self, messages: list[dict], tools: list | None = None, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            tools=tools,
            chat_template=self.source,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def prompt_ids(self, messages: list[dict], tools: list | None = None) -> list[int]:
        """Token ids of a conversation followed by the header of the assistant's reply, for generation."""
        text = self.render(messages, tools, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, conversation: Conversation, train_on_prompt: bool = False) -> Encoded:
        """input_ids of the rendered conversation and labels that keep only the assistant turns."""
        text, spans = self.render_with_spans(conversation.messages, conversation.tools)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoding["input_ids"]
        if train_on_prompt:
            return Encoded(list(ids), list(ids))
        labels = [IGNORE] * len(ids)
        span_index = 0
        for position, (start, _end) in enumerate(encoding["offset_mapping"]):
            while span_index < len(spans) and start >= spans[span_index][1]:
                span_index += 1
            if span_index == len(spans):
                break
            if spans[span_index][0] <= start:
                labels[position] = ids[position]
        return Encoded(list(ids), labels)

    def render_with_spans(self, messages: list[dict], tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans [start, end) of the assistant turns in it."""
        text = self.render(messages, tools)
        marked = [dict(message, content=_SENTINEL.format(i)) for i, message in enumerate(messages)]
        pieces = _SENTINEL_RE.split(self.render(marked, tools))
        rebuilt: list[str] = []
        spans: list[tuple[int, int]] = []
        length = 0
        for k, piece in enumerate(pieces):
            if k % 2 == 0:  # template glue
                rebuilt.append(piece)
                length += len(piece)
                continue
            message = messages[int(piece)]
            content = message["content"]
            rebuilt.append(content)
            if message["role"] == "assistant":
                closing = _common_prefix(pieces[k + 1], self._turn_closing)
                spans.append((length, length + len(content) + len(closing)))
            length += len(content)
        if "".join(rebuilt) != text:
            raise TunesmithError(
                f"template '{self.name}' changes message contents while rendering (e.g. strips or rewrites "
                "them), so trained tokens cannot be located; strip the data's whitespace or pick another template"
            )
        return text, spans

    def stop_token_ids(self) -> list[int]:
        """Tokens that end the assistant's reply: EOS, and the template's end-of-turn token when special."""
        ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        closing = self.tokenizer(self._turn_closing, add_special_tokens=False)["input_ids"]
        if closing and closing[0] in self.tokenizer.all_special_ids and closing[0] not in ids:
            ids.append(closing[0])
        return ids

    @cached_property
    def _turn_closing(self) -> str:
        """What the template writes right after an assistant's content to close the turn (e.g. '<|im_end|>\\n')."""
        probe = [
            {"role": "user", "content": _SENTINEL.format(0)},
            {"role": "assistant", "content": _SENTINEL.format(1)},
        ]
        rendered = self.render(probe)
        return rendered.split(_SENTINEL.format(1), 1)[1] if _SENTINEL.format(1) in rendered else ""


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]
