"""The one template mechanism: a jinja chat template rendered to (input_ids, labels).

Training, chat and export all render through `ChatTemplate`, so a model is served with exactly the text it
was trained on. The trained spans are found without any per-template knowledge: the conversation is rendered
once more with every message's content replaced by a sentinel, which shows where each content lands in the
real rendering; an assistant turn is trained from its content through the text that closes the turn (the
end-of-turn token), never the header that opens it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from functools import cached_property

from tunesmith.data.media import check_model_reads
from tunesmith.data.records import Conversation, Encoded
from tunesmith.data.template_names import builtin_template_names, template_source  # noqa: F401 (re-exported)
from tunesmith.errors import TunesmithError

# Private-use code points: no tokenizer or dataset gives them meaning, so they cannot collide with text.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
IGNORE = -100
_MAX_SHAPES = 1024  # role sequences whose marked rendering is remembered (forgotten all at once when full)


class ChatTemplate:
    """A tokenizer plus a jinja chat template, able to render for training and for generation."""

    def __init__(self, tokenizer, name: str = "auto", media=None):
        self.tokenizer = tokenizer
        self.name = name
        self.media = media  # a vision-language model's image side (data/vision_processor.py); None: text-only
        self.source = template_source(tokenizer, name)
        self._marked_by_shape: dict[tuple[str, ...], list[str]] = {}

    def render(self, messages: list[dict], tools: list | None = None, add_generation_prompt: bool = False) -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tools=tools,
                chat_template=self.source,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except TemplateError as err:
            raise TunesmithError(f"template '{self.name}' cannot render this conversation: {err}") from None

    def prompt_ids(self, messages: list[dict], tools: list | None = None) -> list[int]:
        """Token ids of a conversation followed by the header of the assistant's reply, for generation."""
        text = self.render(messages, tools, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, conversation: Conversation, train_on_prompt: bool = False, mask_history: bool = False) -> Encoded:
        """input_ids of the rendered conversation and labels that keep only the assistant turns.

        train_on_prompt keeps every token; mask_history keeps only the last assistant turn. A token is trained
        when it overlaps a trained span, so a token that joins the glue's last space to the reply's first word
        (as sentencepiece and byte-level BPE do) is learned with the reply.
        """
        return self.encode_many([conversation], train_on_prompt, mask_history)[0]

    def encode_many(self, conversations: list[Conversation], train_on_prompt: bool = False,
                    mask_history: bool = False) -> list[Encoded]:
        """`encode` of each conversation, the texts tokenized in one call (the Rust tokenizer uses every core)."""
        if self.media is not None:  # a vision-language model: its image side expands the placeholders
            return self.media.encode_many(self, conversations, train_on_prompt, mask_history)
        for conversation in conversations:
            check_model_reads(conversation, None)
        layouts = [self.render_with_spans(c.messages, c.tools) for c in conversations]
        tokenized = self.tokenize_with_offsets([text for text, _ in layouts])
        encoded = []
        for (_, spans), (ids, offsets) in zip(layouts, tokenized):
            if train_on_prompt:
                encoded.append(Encoded(ids, list(ids)))
            else:
                encoded.append(Encoded(ids, span_labels(ids, offsets, spans[-1:] if mask_history else spans)))
        return encoded

    def tokenize_with_offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """(ids, character offsets of each token) of each text, without special tokens added."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer directly: the Python wrapper costs as much as the work
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            return [(encoding.ids, encoding.offsets) for encoding in encodings]
        encoding = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(ids), offsets) for ids, offsets in zip(encoding["input_ids"], encoding["offset_mapping"])]

    def render_with_spans(self, messages: list[dict], tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans [start, end) of the assistant turns in it."""
        text = self.render(messages, tools)
        if tools and not all(_tool_name(tool) in text for tool in tools):
            raise TunesmithError(
                f"template '{self.name}' drops the tool definitions; pick one that renders tools (qwen3, qwen2_5, "
                "or the tokenizer's own when it supports tools)"
            )
        shape = _plain_shape(messages, tools)
        if shape is not None:  # most datasets have a handful of shapes: render the marked conversation once each
            pieces = self._marked_by_shape.get(shape)
            if pieces is None:
                if len(self._marked_by_shape) >= _MAX_SHAPES:
                    self._marked_by_shape.clear()
                pieces = self._marked_by_shape[shape] = _SENTINEL_RE.split(self.render(_marked(messages), tools))
            spans = self._spans(messages, pieces, {}, text)
            if spans is not None:
                return text, spans
        marked = _marked(messages)
        pieces = _SENTINEL_RE.split(self.render(marked, tools))
        spans = self._spans(messages, pieces, self._calls_in_glue(messages, marked, tools, pieces), text)
        if spans is None:
            raise TunesmithError(
                f"template '{self.name}' changes message contents while rendering (e.g. strips or rewrites "
                "them), so trained tokens cannot be located; strip the data's whitespace or pick another template"
            )
        return text, spans

    def render_reply(self, prompt: list[dict], reply: dict, tools: list | None = None
                     ) -> tuple[str, tuple[int, int]]:
        """The text of prompt + reply and the reply's span in it. An empty reply (a policy may answer nothing)
        has no content to find: it spans what the template writes after the prompt's generation header."""
        messages = list(prompt) + [reply]
        if reply["content"] or reply.get("tool_calls"):
            text, spans = self.render_with_spans(messages, tools)
            return text, spans[-1]
        text = self.render(messages, tools)
        header = self.render(list(prompt), tools, add_generation_prompt=True)
        if not text.startswith(header):
            raise TunesmithError(f"template '{self.name}' renders an empty reply differently from its generation "
                                 "prompt, so the reply cannot be located; drop empty replies from the data")
        return text, (len(header), len(text))

    def _spans(self, messages, pieces, calls, text) -> list[tuple[int, int]] | None:
        """Assistant spans from the marked rendering's pieces (glue, message index, glue, ...), or None when
        glue and contents put back together are not `text` (the template made the content change the glue)."""
        rebuilt: list[str] = []
        spans: list[tuple[int, int]] = []
        length = 0
        for k, piece in enumerate(pieces):
            if k % 2 == 0:  # template glue
                spans += [(length + start, length + end) for start, end in calls.get(k, [])]
                rebuilt.append(piece)
                length += len(piece)
                continue
            message = messages[int(piece)]
            content = message["content"]
            rebuilt.append(content)
            if message["role"] == "assistant":
                spans.append((length, length + len(content) + self._reply_tail(message, pieces[k + 1])))
            length += len(content)
        return spans if "".join(rebuilt) == text else None

    def _calls_in_glue(self, messages, marked, tools, pieces) -> dict[int, list[tuple[int, int]]]:
        """Spans, within their glue piece, of the replies that are only tool calls (empty content).

        The call starts where the glue stops matching a rendering of the same message without its calls.
        """
        found: dict[int, list[tuple[int, int]]] = {}
        for index, message in enumerate(messages):
            if message["content"] or message["role"] != "assistant" or not message.get("tool_calls"):
                continue
            glue_index = 2 * sum(1 for earlier in messages[:index] if earlier["content"])
            without = [dict(m, tool_calls=None) if i == index else m for i, m in enumerate(marked)]
            glue, plain = pieces[glue_index], _SENTINEL_RE.split(self.render(without, tools))[glue_index]
            start = len(_common_prefix(glue, plain))
            found.setdefault(glue_index, []).append((start, start + self._reply_tail(message, glue[start:])))
        return found

    def _reply_tail(self, message: dict, glue: str) -> int:
        """How much of the glue after a reply's content is trained: its tool calls and the turn's closing."""
        if not message.get("tool_calls"):
            return len(_common_prefix(glue, self._turn_closing))
        names = [_tool_name(call) for call in message["tool_calls"]]
        end = glue.find(self._turn_closing) if self._turn_closing else -1
        if end < 0 or not all(name in glue[:end] for name in names):
            raise TunesmithError(
                f"template '{self.name}' does not render tool calls; pick one that does (qwen3, qwen2_5, or the "
                "tokenizer's own when it supports tools)"
            )
        return end + len(self._turn_closing)

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


def span_labels(ids: list[int], offsets, spans: list[tuple[int, int]]) -> list[int]:
    """Labels keeping the tokens whose characters [start, end) overlap one of the spans (or begin inside it,
    for zero-width tokens). Offsets are sorted, so each span's tokens are found by bisection."""
    labels = [IGNORE] * len(ids)
    for span_start, span_end in spans:
        first = bisect_left(offsets, True, key=lambda offset: offset[1] > span_start or offset[0] >= span_start)
        stop = bisect_left(offsets, True, key=lambda offset: offset[0] >= span_end)
        labels[first:stop] = ids[first:stop]
    return labels


def sentinel(index: int) -> str:
    """A message content that shows where content `index` lands once the template has rendered it."""
    return _SENTINEL.format(index)


def between_sentinels(rendered: str) -> list[str]:
    """The rendered text cut at every sentinel: the template's own text before, between and after contents."""
    return _SENTINEL_RE.split(rendered)[::2]


def _marked(messages: list[dict]) -> list[dict]:
    """The messages with each non-empty content replaced by a sentinel holding its index. Empty contents get
    none: templates test contents for emptiness (e.g. before tool calls), and a reply made only of tool calls
    is found inside the glue instead (see _calls_in_glue)."""
    return [dict(m, content=_SENTINEL.format(i)) if m["content"] else m for i, m in enumerate(messages)]


def _plain_shape(messages: list[dict], tools) -> tuple[str, ...] | None:
    """The roles, when they alone decide the marked rendering: no tools, and every message has a role and a
    non-empty content and nothing else. Conversations of one shape then share their marked rendering."""
    if tools or not all(m.keys() == {"role", "content"} and m["content"] for m in messages):
        return None
    return tuple(m["role"] for m in messages)


def _tool_name(entry: dict) -> str:
    """The function name of a tool definition or a tool call, in OpenAI's nested or flat shape."""
    return str(entry.get("function", entry).get("name", ""))


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]
