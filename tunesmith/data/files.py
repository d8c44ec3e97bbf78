"""Reading data files into rows (dicts), with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import TunesmithError


def read_rows(path: Path) -> list[dict]:
    """Rows of a .json (a list of objects) or .jsonl (an object per line) file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    raise TunesmithError(f"{path}: unsupported file type '{suffix}'; use .json or .jsonl")


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise TunesmithError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TunesmithError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, list):
        raise TunesmithError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise TunesmithError(f"{path}: record {index} is {type(row).__name__}, expected an object")
    return data


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TunesmithError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise TunesmithError(f"{path}: line {number} is {type(row).__name__}, expected an object")
            rows.append(row)
    if not rows:
        raise TunesmithError(f"{path}: the file is empty")
    return rows
