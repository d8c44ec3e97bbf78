"""What a format converter reads from one dataset row, before it becomes a typed record, and the
column readers the converters share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tunesmith.data.registry import DatasetSpec
from tunesmith.errors import TunesmithError


@dataclass
class Parsed:
    messages: list[dict]
    tools: list[dict] | None = None
    chosen: dict | None = None
    rejected: dict | None = None
    kto_tag: bool | None = None


Converter = Callable[[dict, DatasetSpec, str], Parsed]


def column(row: dict, name: str, where: str, required: bool = False) -> str:
    """A string column; missing or null reads as '' unless required."""
    value = row.get(name)
    if value is None:
        if required:
            present = ", ".join(row) or "none"
            raise TunesmithError(
                f"{where}: missing column '{name}' (columns present: {present}); map it in dataset_info.json "
                "'columns' or fix the record"
            )
        return ""
    if not isinstance(value, str):
        raise TunesmithError(f"{where}: column '{name}' must be a string, got {type(value).__name__}")
    return value


def kto_tag(row: dict, name: str, where: str) -> bool:
    value = row.get(name)
    if not isinstance(value, bool):
        raise TunesmithError(f"{where}: KTO tag column '{name}' must be true or false, got {value!r}")
    return value
