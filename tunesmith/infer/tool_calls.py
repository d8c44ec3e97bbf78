"""Find tool calls in a model's reply, for chat templates that define a tool-call format.

A format is recognised from the template's own text: a template that tells the model to wrap calls in
`<tool_call>...</tool_call>` (Qwen, Hermes and their fine-tunes) gets them parsed into OpenAI-style calls.
Templates without a known format get no parsing; their replies stay plain text.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCallFormat:
    """Calls written as JSON objects {"name", "arguments"} between a start and an end tag."""

    start: str
    end: str

    def forced_prefix(self, function_name: str | None) -> str:
        """Reply text to pre-fill so the model must call a tool (a given one, when named)."""
        if function_name is None:
            return self.start + "\n"
        return self.start + "\n" + '{"name": ' + json.dumps(function_name) + ', "arguments": '

    def split(self, text: str) -> tuple[str, list[dict]]:
        """The reply's plain content and the OpenAI-shaped tool calls in it. A block that is not valid JSON
        naming a function stays in the content, so nothing the model wrote is lost."""
        content: list[str] = []
        calls: list[dict] = []
        rest = text
        while (start := rest.find(self.start)) >= 0:
            content.append(rest[:start])
            end = rest.find(self.end, start)
            block = rest[start + len(self.start): end if end >= 0 else len(rest)]
            call = _parse_call(block)
            if call is None:
                content.append(rest[start: end + len(self.end) if end >= 0 else len(rest)])
            else:
                calls.append(call)
            rest = rest[end + len(self.end):] if end >= 0 else ""
        content.append(rest)
        return "".join(content).strip() if calls else text, calls


HERMES = ToolCallFormat("<tool_call>", "</tool_call>")


def tool_call_format(template_source: str) -> ToolCallFormat | None:
    """The tool-call format a chat template asks the model to use, or None when it defines none."""
    if HERMES.start in template_source and HERMES.end in template_source:
        return HERMES
    return None


def _parse_call(block: str) -> dict | None:
    try:
        data = json.loads(block.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return {
        "id": "call_" + secrets.token_hex(12),
        "type": "function",
        "function": {"name": data["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


class ContentGate:
    """While streaming, passes content text through but stops at the start of a tool call.

    Text that might be the beginning of the start tag is held back until it is known not to be one.
    """

    def __init__(self, start: str):
        self.start = start
        self.buffer = ""
        self.closed = False  # a tool call began; everything after is the calls' text

    def feed(self, piece: str) -> str:
        if self.closed:
            return ""
        self.buffer += piece
        found = self.buffer.find(self.start)
        if found >= 0:
            self.closed = True
            return self._take(found)
        keep = next((n for n in range(min(len(self.start) - 1, len(self.buffer)), 0, -1)
                     if self.buffer.endswith(self.start[:n])), 0)
        return self._take(len(self.buffer) - keep)

    def flush(self) -> str:
        return "" if self.closed else self._take(len(self.buffer))

    def _take(self, upto: int) -> str:
        piece, self.buffer = self.buffer[:upto], self.buffer[upto:]
        return piece
