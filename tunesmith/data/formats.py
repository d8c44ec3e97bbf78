"""Source formats -> typed records, as a registry of converters. The only place formats are known."""

from __future__ import annotations

import re
from typing import Callable

from tunesmith.data.records import Conversation, Text
from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import TunesmithError

Converter = Callable[[dict, DatasetSpec, int], "Conversation | Text"]
CONVERTERS: dict[str, Converter] = {}

_ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
}


def converter(name: str):
    def register(function: Converter) -> Converter:
        CONVERTERS[name] = function
        return function

    return register


def convert(row: dict, spec: DatasetSpec, index: int):
    try:
        function = CONVERTERS[spec.formatting]
    except KeyError:
        raise TunesmithError(
            f"dataset '{spec.name}': unknown formatting '{spec.formatting}'; use one of {', '.join(CONVERTERS)}"
        ) from None
    return function(row, spec, index)


@converter("alpaca")
def alpaca(row: dict, spec: DatasetSpec, index: int) -> Conversation:
    """instruction (+ input) -> user, output -> assistant; history pairs before them; optional system."""
    columns = {**_ALPACA_COLUMNS, **spec.columns}
    prompt = _column(row, columns["prompt"], spec, index, required=True)
    query = _column(row, columns["query"], spec, index)
    response = _column(row, columns["response"], spec, index, required=True)
    system = _column(row, columns["system"], spec, index)
    messages = [{"role": "system", "content": system.strip()}] if system else []
    for turn, pair in enumerate(row.get(columns["history"]) or []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise TunesmithError(f"{spec.path}: record {index}: history[{turn}] must be a [user, assistant] pair")
        messages += [{"role": "user", "content": str(pair[0]).strip()},
                     {"role": "assistant", "content": str(pair[1]).strip()}]
    user = "\n".join(part for part in (prompt, query) if part)
    messages += [{"role": "user", "content": user.strip()}, {"role": "assistant", "content": response.strip()}]
    return Conversation(messages)


def to_text(row: dict, spec: DatasetSpec, index: int) -> Text:
    """Pre-training text from the 'prompt' column mapping (LLaMA-Factory's convention), default 'text'."""
    return Text(_column(row, spec.columns.get("prompt", "text"), spec, index, required=True))


def _column(row: dict, column: str, spec: DatasetSpec, index: int, required: bool = False) -> str:
    value = row.get(column)
    if value is None:
        if required:
            raise TunesmithError(
                f"{spec.path}: record {index} has no '{column}' column; map it in dataset_info.json 'columns' "
                f"or fix the record (columns present: {', '.join(row) or 'none'})"
            )
        return ""
    if not isinstance(value, str):
        raise TunesmithError(f"{spec.path}: record {index}: '{column}' must be a string, got {type(value).__name__}")
    return value


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def fill_vars(record, values: dict[str, str]):
    """Replace {{name}}-style placeholders whose names are in `values`; others are left as they are."""
    if not values:
        return record

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)

    if isinstance(record, Text):
        return Text(fill(record.text))
    messages = [dict(message, content=fill(message["content"])) for message in record.messages]
    return Conversation(messages, record.tools)
