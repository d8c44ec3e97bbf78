"""Source formats -> typed records, as an explicit table of converters (CONVERTERS). The only place formats are known.

A converter reads one row into a `Parsed` (messages in `apply_chat_template`'s shape plus the optional
preference / KTO columns); `to_record` then checks the turn structure and builds the record the stage asked
for. Every error names the file, the record (numbered from 1) and the problem.
"""

from __future__ import annotations

import dataclasses
import re

from tunesmith.data import sharegpt
from tunesmith.data.media import MEDIA_COLUMNS, attach_media, refuse_media_in_text
from tunesmith.data.parsed import Converter, Parsed, column, kto_tag
from tunesmith.data.records import Conversation, KtoExample, Preference, Text
from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import TunesmithError

RECORD_KINDS = ("conversation", "text", "preference", "kto")
_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                   "history": "history"}


def convert(row: dict, spec: DatasetSpec, where: str, record_kind: str = "conversation"):
    """The record of kind `record_kind` that `row` (described by `where`, e.g. 'file: record 3') holds."""
    if record_kind == "text":
        refuse_media_in_text(row, spec, where)
        return to_text(row, spec, where)
    if record_kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {record_kind!r}")
    try:
        function = CONVERTERS[spec.formatting]
    except KeyError:
        raise TunesmithError(
            f"dataset '{spec.name}': unknown formatting '{spec.formatting}'; use one of {', '.join(CONVERTERS)}"
        ) from None
    record = attach_media(to_record(function(row, spec, where), record_kind, spec, where), row, spec, where)
    if isinstance(record, Conversation):
        record.columns = extra_columns(row, spec)
    return record


# Roles a column mapping can name that the formats themselves read (LLaMA-Factory's dataset_info.json keys).
_FORMAT_ROLES = {"prompt", "query", "response", "history", "system", "tools", "messages", "chosen", "rejected",
                 "kto_tag", "images", "videos", "audios"}
_JSON_VALUES = (str, int, float, bool, list, dict, type(None))


def extra_columns(row: dict, spec: DatasetSpec) -> dict:
    """The row's columns the format did not read, by their own names, plus any column the mapping names under a
    role of its own (`"columns": {"solution": "answer_text"}` gives `solution`): reward functions take them as
    keyword arguments. Only JSON values: they are kept in the tokenized cache."""
    read = {source for role, source in spec.columns.items() if role in _FORMAT_ROLES}
    read |= set(_ALPACA_COLUMNS.values()) | {"messages", "conversations", *MEDIA_COLUMNS}
    extras = {name: value for name, value in row.items() if name not in read}
    extras.update({role: row[source] for role, source in spec.columns.items()
                   if role not in _FORMAT_ROLES and source in row})
    return {name: value for name, value in extras.items() if isinstance(value, _JSON_VALUES)}


def to_text(row: dict, spec: DatasetSpec, where: str) -> Text:
    """Pre-training text from the 'prompt' column mapping (LLaMA-Factory's convention), default 'text'."""
    return Text(column(row, spec.columns.get("prompt", "text"), where, required=True))


def to_record(parsed: Parsed, record_kind: str, spec: DatasetSpec, where: str):
    messages = parsed.messages
    check_alternation(messages, where)
    if record_kind == "preference":
        if parsed.chosen is None or parsed.rejected is None:
            raise TunesmithError(
                f"dataset '{spec.name}' is not a preference dataset: set \"ranking\": true and map the 'chosen' and "
                "'rejected' columns in dataset_info.json"
            )
        _check_ends(messages, "user", "a preference prompt must end with a user turn", where)
        return Preference(messages, parsed.chosen, parsed.rejected, parsed.tools)
    if spec.ranking:
        raise TunesmithError(
            f"dataset '{spec.name}' is a preference dataset (ranking: true); use it with a preference stage "
            "(rm, dpo) or pick a dataset with responses"
        )
    _check_ends(messages, "assistant", "the conversation must end with an assistant turn", where)
    if record_kind == "kto":
        if parsed.kto_tag is None:
            raise TunesmithError(f"dataset '{spec.name}' has no 'kto_tag' column mapped in dataset_info.json")
        return KtoExample(messages[:-1], messages[-1], parsed.kto_tag, parsed.tools)
    return Conversation(messages, parsed.tools)


def check_alternation(messages: list[dict], where: str) -> None:
    """After an optional leading system message, prompt turns (user, tool) and assistant turns alternate."""
    previous = "system"
    for number, message in enumerate(messages, 1):
        role = message["role"]
        if role == "system" and number > 1:
            raise TunesmithError(f"{where}: message {number} is a system message; only the first message may be")
        if role == "system":
            continue
        side = "assistant" if role == "assistant" else "user"
        opens = previous == "system" and side == "user"
        follows = previous != "system" and (side != _side(previous) or role == previous == "tool")
        if not (opens or follows):
            after = "the start" if previous == "system" else f"a '{previous}' message"
            raise TunesmithError(
                f"{where}: message {number} ('{role}') follows {after}; the conversation must start with a user "
                "turn and alternate user and assistant turns"
            )
        previous = role
    if previous == "system":
        raise TunesmithError(f"{where}: the conversation has no user or assistant messages")


def _side(role: str) -> str:
    return "assistant" if role == "assistant" else "user"


def _check_ends(messages: list[dict], side: str, problem: str, where: str) -> None:
    if _side(messages[-1]["role"]) != side:
        raise TunesmithError(f"{where}: {problem} (it ends with '{messages[-1]['role']}')")


def alpaca(row: dict, spec: DatasetSpec, where: str) -> Parsed:
    """instruction (+ input) -> user, output -> assistant; history pairs before them; optional system."""
    columns = {**_ALPACA_COLUMNS, **spec.columns}
    prompt = column(row, columns["prompt"], where, required=True)
    query = column(row, columns["query"], where)
    system = column(row, columns["system"], where)
    messages = [{"role": "system", "content": system.strip()}] if system else []
    for turn, pair in enumerate(row.get(columns["history"]) or [], 1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise TunesmithError(f"{where}: history entry {turn} must be a [user, assistant] pair")
        messages += [_message("user", pair[0]), _message("assistant", pair[1])]
    messages.append(_message("user", "\n".join(part for part in (prompt, query) if part)))
    parsed = Parsed(messages)
    if spec.ranking:
        parsed.chosen = _message("assistant", column(row, columns.get("chosen", "chosen"), where, required=True))
        parsed.rejected = _message("assistant", column(row, columns.get("rejected", "rejected"), where, required=True))
        return parsed
    messages.append(_message("assistant", column(row, columns["response"], where, required=True)))
    if "kto_tag" in columns:
        parsed.kto_tag = kto_tag(row, columns["kto_tag"], where)
    return parsed


def _message(role: str, content) -> dict:
    return {"role": role, "content": str(content).strip()}


# dataset_info.json's "formatting" -> the function that reads one row of that format.
CONVERTERS: dict[str, Converter] = {"alpaca": alpaca, "sharegpt": sharegpt.sharegpt, "openai": sharegpt.openai}


def detect_format(spec: DatasetSpec, first_row: dict) -> DatasetSpec:
    """For a file given by path (formatting 'auto'): the format and columns its first record shows."""
    columns, formatting = dict(spec.columns), "alpaca"
    for key in ("messages", "conversations"):
        turns = first_row.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            formatting = "openai" if "role" in turns[0] else "sharegpt"
            columns.setdefault("messages", key)
            for extra in ("system", "tools"):
                if extra in first_row:
                    columns.setdefault(extra, extra)
    for media in MEDIA_COLUMNS:  # every format may carry images
        if media in first_row:
            columns.setdefault(media, media)
    ranking = "chosen" in first_row and "rejected" in first_row
    if ranking:
        columns.setdefault("chosen", "chosen")
        columns.setdefault("rejected", "rejected")
    for tag in ("kto_tag", "label"):
        if isinstance(first_row.get(tag), bool):
            columns.setdefault("kto_tag", tag)
    return dataclasses.replace(spec, formatting=formatting, ranking=ranking, columns=columns)


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill_vars(record, values: dict[str, str]):
    """Replace {{name}}-style placeholders whose names are in `values`; others are left as they are."""
    if not values:
        return record

    def fill(text):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text) if isinstance(text, str) else text

    def fill_messages(messages):
        return [dict(message, content=fill(message.get("content"))) for message in messages]

    if isinstance(record, Text):
        return Text(fill(record.text))
    if isinstance(record, Preference):
        chosen, rejected = fill_messages([record.chosen, record.rejected])
        return dataclasses.replace(record, prompt=fill_messages(record.prompt), chosen=chosen, rejected=rejected)
    if isinstance(record, KtoExample):
        return dataclasses.replace(record, prompt=fill_messages(record.prompt),
                                   completion=fill_messages([record.completion])[0])
    return dataclasses.replace(record, messages=fill_messages(record.messages))


