"""An Ollama Modelfile for an exported GGUF: the chat template translated to Go template syntax, the stop
tokens, and the template's default system prompt.

A jinja template cannot be translated in general, so it is measured instead: rendering conversations whose
contents are sentinels shows the text each role puts before and after its content. The measured format is
then checked to reproduce the jinja rendering of real conversations before it is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.template import between_sentinels, sentinel
from tunesmith.errors import TunesmithError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TurnFormat:
    """How a template lays out a conversation: fixed text around each message's content."""

    preamble: str  # written once, before the first message (e.g. a BOS token)
    prefix: dict[str, str] = field(default_factory=dict)
    suffix: dict[str, str] = field(default_factory=dict)
    generation: str = ""  # opens the assistant's reply
    # Some templates open a conversation's final assistant turn differently (Qwen3 writes an empty think block)
    final_assistant_prefix: str | None = None
    default_system: str | None = None  # the system prompt the template adds when a conversation has none

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self._prefix(m["role"], n == len(messages) - 1) + m["content"] + self.suffix[m["role"]]
                       for n, m in enumerate(messages))
        return self.preamble + body + (self.generation if add_generation_prompt else "")

    def _prefix(self, role: str, last: bool) -> str:
        if role == "assistant" and last and self.final_assistant_prefix is not None:
            return self.final_assistant_prefix
        return self.prefix[role]


def measure_turn_format(template) -> TurnFormat:
    """The TurnFormat of a `tunesmith.data.template.ChatTemplate`, checked against its own rendering."""
    try:
        fmt = _measure(template)
    except (TunesmithError, ValueError, KeyError, IndexError) as err:
        raise _untranslatable(template, str(err)) from None
    for messages, generation in _PROBES:
        if fmt.render(messages, generation) != template.render(messages, add_generation_prompt=generation):
            raise _untranslatable(template, "it does not lay every turn out the same way")
    return fmt


def _measure(template) -> TurnFormat:
    def pieces(roles: list[str], generation: bool = False) -> list[str]:
        messages = [{"role": role, "content": sentinel(i)} for i, role in enumerate(roles)]
        return between_sentinels(template.render(messages, add_generation_prompt=generation))

    suffix_user = pieces(["user"])[1]
    _, before_final_assistant, suffix_assistant = pieces(["user", "assistant"])
    head_user, between_user_assistant, between_assistant_user, _ = pieces(["user", "assistant", "user"])
    prefix_assistant = _strip_start(between_user_assistant, suffix_user)
    final_prefix = _strip_start(before_final_assistant, suffix_user)
    prefix_user = _strip_start(between_assistant_user, suffix_assistant)
    head_system, between_system_user, _ = pieces(["system", "user"])
    suffix_system = _strip_end(between_system_user, prefix_user)
    generation = _strip_start(pieces(["user"], generation=True)[1], suffix_user)
    before_user = _strip_end(head_user, prefix_user)
    if head_system.startswith(before_user):  # no default system prompt: the shared head is the preamble
        preamble, prefix_system, default_system = before_user, head_system[len(before_user):], None
    else:  # the head of a user-first conversation holds a whole default system turn
        # With a default system prompt every conversation starts with a system turn, so the preamble
        # can ride in front of the system prefix.
        preamble, prefix_system = "", head_system
        default_system = _strip_end(_strip_start(before_user, head_system), suffix_system)
    return TurnFormat(
        preamble,
        {"system": prefix_system, "user": prefix_user, "assistant": prefix_assistant},
        {"system": suffix_system, "user": suffix_user, "assistant": suffix_assistant},
        generation=generation,
        default_system=default_system,
        final_assistant_prefix=final_prefix if final_prefix != prefix_assistant else None,
    )


def _strip_start(text: str, start: str) -> str:
    if not text.startswith(start):
        raise ValueError(f"{text!r} does not start with {start!r}")
    return text[len(start):]


def _strip_end(text: str, end: str) -> str:
    if not text.endswith(end):
        raise ValueError(f"{text!r} does not end with {end!r}")
    return text[: len(text) - len(end)]


def _untranslatable(template, why: str) -> TunesmithError:
    return TunesmithError(
        f"the chat template '{template.name}' cannot be translated for Ollama ({why}); "
        "set export.ollama=false and write the Modelfile's TEMPLATE by hand"
    )


_PROBES = [
    ([{"role": "user", "content": "Hi there"}], True),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], True),
    ([{"role": "user", "content": "One?"}, {"role": "assistant", "content": "Two."},
      {"role": "user", "content": "Three?"}, {"role": "assistant", "content": "Four."}], False),
    ([{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
      {"role": "user", "content": "Q2"}], True),
]


def go_template(fmt: TurnFormat) -> str:
    """The format as an Ollama (Go text/template) TEMPLATE over .Messages. Literal text is written as quoted
    Go strings so that whitespace trimming between actions never touches it."""
    def text(value: str) -> str:
        return "{{ " + json.dumps(value, ensure_ascii=False) + " }}" if value else ""

    lines = ["{{- range $i, $_ := .Messages }}", "{{- $last := eq (len (slice $.Messages $i)) 1 }}"]
    if fmt.preamble:
        lines.append("{{- if eq $i 0 }}" + text(fmt.preamble) + "{{ end }}")
    for n, role in enumerate(ROLES):
        keyword = "if" if n == 0 else "else if"
        closing = text(fmt.suffix[role])
        if role == "assistant" and closing:  # the last assistant turn is the reply being written: left open
            closing = "{{ if not $last }}" + closing + "{{ end }}"
        opening = text(fmt.prefix[role])
        if role == "assistant" and fmt.final_assistant_prefix is not None:
            opening = "{{ if $last }}" + text(fmt.final_assistant_prefix) + "{{ else }}" + opening + "{{ end }}"
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}' + opening + "{{ .Content }}" + closing)
    lines.append("{{- end }}")
    lines.append('{{- if and $last (ne .Role "assistant") }}' + text(fmt.generation) + "{{ end }}")
    lines.append("{{- end }}")
    return "\n".join(lines)


def write_modelfile(folder: Path, gguf_name: str, template, stop_ids: list[int]) -> Path:
    fmt = measure_turn_format(template)
    body = go_template(fmt)
    if '"""' in body or (fmt.default_system and '"""' in fmt.default_system):
        raise _untranslatable(template, 'it contains """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{body}"""', ""]
    if fmt.default_system is not None:
        lines += [f'SYSTEM """{fmt.default_system}"""', ""]
    for token in template.tokenizer.convert_ids_to_tokens(stop_ids):
        lines.append(f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}")
    path = Path(folder) / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
