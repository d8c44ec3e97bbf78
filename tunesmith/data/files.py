"""Reading data files into rows (dicts), with errors that name the file and the record.

Supported: .json (a list of objects), .jsonl (an object per line), .csv, .parquet, .arrow (Arrow IPC, as
`datasets` writes it), .txt (each non-blank line is a {"text": line} record), and folders of them.
Records are numbered from 1 in every message, so `record 3` of a .jsonl file is its third object.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tunesmith.errors import TunesmithError

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")
REGISTRY_FILE = "dataset_info.json"


def data_files(path: Path) -> list[Path]:
    """The data files a dataset path stands for: the file itself, or a folder's supported files, sorted."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES and p.name != REGISTRY_FILE)
    if not files:
        raise TunesmithError(f"{path}: the folder holds no data files; supported types: {', '.join(SUFFIXES)}")
    return files


def file_digest(path: Path) -> str:
    """Content hash of a file (what the tokenization cache is keyed on, so edits invalidate it)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict]:
    """Rows of one data file, each a dict; an empty file is an error."""
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".txt": _read_txt,
               ".csv": _read_csv, ".parquet": _read_parquet, ".arrow": _read_arrow}
    if suffix not in readers:
        raise TunesmithError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}")
    rows = readers[suffix](path)
    if not rows:
        raise TunesmithError(f"{path}: the file is empty (no records)")
    return rows


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if path.suffix == ".json" and text.lstrip().startswith("{"):
            return _read_jsonl(path)  # JSON Lines saved under .json: common, and unambiguous
        raise TunesmithError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TunesmithError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise TunesmithError(f"{path}: record {index + 1} is {type(row).__name__}, expected an object")
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
                raise TunesmithError(
                    f"{path}: record {len(rows) + 1} (line {number}) is not valid JSON ({err.msg}, column {err.colno})"
                ) from None
            if not isinstance(row, dict):
                raise TunesmithError(
                    f"{path}: record {len(rows) + 1} (line {number}) is {type(row).__name__}, expected an object"
                )
            rows.append(row)
    return rows


def _read_txt(path: Path) -> list[dict]:
    """Each non-blank line is one text record; blank lines separate records and are not records themselves."""
    with path.open(encoding="utf-8") as handle:
        return [{"text": line.rstrip("\n")} for line in handle if line.strip()]


def _read_csv(path: Path) -> list[dict]:
    from pyarrow import ArrowInvalid, csv

    try:
        return csv.read_csv(path).to_pylist()
    except ArrowInvalid as err:
        if "Empty CSV" in str(err):
            return []
        raise TunesmithError(f"{path}: not a valid CSV file ({err})") from None


def _read_parquet(path: Path) -> list[dict]:
    from pyarrow import ArrowInvalid, parquet

    try:
        return parquet.read_table(path).to_pylist()
    except ArrowInvalid as err:
        raise TunesmithError(f"{path}: not a valid Parquet file ({err})") from None


def _read_arrow(path: Path) -> list[dict]:
    from pyarrow import ArrowInvalid, ipc, memory_map

    for open_reader in (ipc.open_stream, ipc.open_file):  # `datasets` writes the stream form
        try:
            with memory_map(str(path)) as source:
                return open_reader(source).read_all().to_pylist()
        except ArrowInvalid:
            continue
    raise TunesmithError(f"{path}: not a valid Arrow IPC file (stream or file format)")
