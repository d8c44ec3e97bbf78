"""`PathField`: the mark on every config field that names a file or folder.

Whatever takes paths from someone else (the web UI, the API) checks them by walking the schema for these
marks (`path_fields`), never by a list of its own, so a new path field cannot slip past the check: marking
it is part of adding it, and a test fails for a path-like field left unmarked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

PathKind = Literal["read", "write", "model", "name", "datasets"]


@dataclass(frozen=True)
class PathField:
    """read / write: a file or folder the run reads or writes. model: a model location, which may also be a
    hub id (org/name) or pkg:NAME. name: a bare name, never a path (no separators). datasets: registered
    dataset names or data file paths. `words`: values that are keywords, not paths ('auto')."""

    kind: PathKind
    words: tuple[str, ...] = ()


def path_fields(model: type[BaseModel], prefix: str = "") -> dict[str, PathField]:
    """Every marked field of `model`, its nested groups and each kind of its tagged unions, by dotted path."""
    from tunesmith.config.fields import schema_fields

    return {spec.path: marker for spec in schema_fields(model, prefix)
            for marker in spec.metadata if isinstance(marker, PathField)}
