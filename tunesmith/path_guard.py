"""The one check on paths that come from someone else (the web UI's forms, API requests).

Every path must lie inside an allowed root: always the folder tunesmith was started in and tunesmith's cache
folder, plus any the user adds. Which config fields are paths is read from the schema's `PathField` marks,
so no field is checked by a hand-kept list. Hub ids (org/name) and keywords ('auto') are not paths.
"""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.config.path_marker import PathField, path_fields
from tunesmith.errors import TunesmithError
from tunesmith.user_dirs import cache_dir

PACKAGE_PREFIX = "pkg:"  # a model shipped inside an installed Python package: not a filesystem path
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PathGuard:
    """Resolves user-typed paths and refuses anything outside the allowed roots."""

    def __init__(self, allowed_roots: list[str | Path] | None = None, base: str | Path = "."):
        self.base = Path(base).resolve()
        self.roots = [self.base, self._absolute(cache_dir())]
        for root in allowed_roots or []:
            path = self._absolute(root)
            if not path.is_dir():
                raise TunesmithError(f"allowed root {root} is not a folder; create it or fix --allowed-root")
            self.roots.append(path)

    def existing(self, text: str | None, what: str, kind: str = "any") -> Path:
        """The resolved path of an existing file or folder (`kind`: any | dir | file)."""
        path = self.inside(text, what)
        if not path.exists():
            raise TunesmithError(f"{what}: {text} does not exist; check the path")
        if kind == "dir" and not path.is_dir():
            raise TunesmithError(f"{what}: {text} is not a folder; give a folder")
        if kind == "file" and not path.is_file():
            raise TunesmithError(f"{what}: {text} is not a file; give a file")
        return path

    def writable(self, text: str | None, what: str) -> Path:
        """The resolved path of a file or folder to create: inside the roots, its parent folder existing."""
        path = self.inside(text, what)
        if not path.parent.is_dir():
            raise TunesmithError(f"{what}: folder {path.parent} does not exist; create it first")
        return path

    def model(self, text: str | None, what: str = "model path") -> str:
        """A model location: 'pkg:NAME' or a hub id as typed, or an existing path inside the roots."""
        typed = (text or "").strip()
        if typed.startswith(PACKAGE_PREFIX) or self.is_hub_id(typed):
            return typed
        return str(self.existing(text, what))

    def is_hub_id(self, text: str) -> bool:
        """org/name that is no local path: a name on the Hugging Face hub (its files go to the HF cache)."""
        return bool(_HUB_ID.match(text)) and ".." not in text and not (self.base / text).exists()

    def check_config(self, raw: dict, schema) -> None:
        """Check every path field the schema marks that `raw` (a config as a nested dict) sets."""
        for dotted, marker in path_fields(schema).items():
            value = _get(raw, dotted)
            if value is not None:
                self.field(dotted, value, marker)

    def field(self, dotted: str, value, marker: PathField) -> None:
        for item in value if isinstance(value, list) else [value]:
            text = str(item).strip()
            if not text or text in marker.words:
                continue
            if marker.kind == "name" or (marker.kind == "datasets" and not _looks_like_path(text, self.base)):
                if _looks_like_path(text, None):
                    raise TunesmithError(f"{dotted}: {text!r} must be a name, not a path; remove the folder part")
            elif marker.kind == "model":
                self.model(text, dotted)
            else:
                self.inside(text, dotted)

    def inside(self, text: str | None, what: str) -> Path:
        if not text or not str(text).strip():
            raise TunesmithError(f"{what} is empty; type a path")
        path = self._absolute(str(text).strip())
        if not any(path == root or path.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(root) for root in self.roots)
            raise TunesmithError(f"{what}: {text} is outside the allowed folders ({allowed}); pick a path inside "
                                 "them, or start tunesmith with --allowed-root for another folder")
        return path

    def _absolute(self, text: str | Path) -> Path:
        path = Path(text).expanduser()
        # resolve() follows symlinks, so a link cannot lead outside an allowed root.
        return (path if path.is_absolute() else self.base / path).resolve()


def _looks_like_path(text: str, base: Path | None) -> bool:
    """Has a folder part, starts like a path, or (with `base`) names something that exists there."""
    if "/" in text or "\\" in text or text.startswith(("~", ".")):
        return True
    return base is not None and (base / text).exists()


def _get(raw: dict, dotted: str):
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
