"""Dotted paths ('train.lr') into raw, nested config dicts."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def set_path(raw: dict, path: str, value: Any) -> None:
    *groups, leaf = path.split(".")
    node = raw
    for group in groups:
        node = node.setdefault(group, {})
    node[leaf] = value


def get_path(raw: dict, path: str, default: Any = None) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def has_path(raw: dict, path: str) -> bool:
    return get_path(raw, path, _MISSING) is not _MISSING
