"""Checks on paths typed into the page: they must exist (where read) and lie inside the allowed roots."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import TunesmithError

PACKAGE_PREFIX = "pkg:"  # a model shipped inside an installed Python package: not a filesystem path


class PathGuard:
    """Resolves user-typed paths; with allowed roots configured, refuses anything outside them."""

    def __init__(self, allowed_roots: list[str | Path] | None = None, base: str | Path = "."):
        self.base = Path(base).resolve()
        self.roots = [self._absolute(root) for root in allowed_roots or []]
        for root in self.roots:
            if not root.is_dir():
                raise TunesmithError(f"allowed root {root} is not a folder; create it or fix --allowed-root")

    def existing(self, text: str | None, what: str, kind: str = "any") -> Path:
        """The resolved path of an existing file or folder (`kind`: any | dir | file)."""
        path = self._inside(text, what)
        if not path.exists():
            raise TunesmithError(f"{what}: {text} does not exist; check the path")
        if kind == "dir" and not path.is_dir():
            raise TunesmithError(f"{what}: {text} is not a folder; give a folder")
        if kind == "file" and not path.is_file():
            raise TunesmithError(f"{what}: {text} is not a file; give a file")
        return path

    def writable(self, text: str | None, what: str) -> Path:
        """The resolved path of a file or folder to create: inside the roots, its parent folder existing."""
        path = self._inside(text, what)
        if not path.parent.is_dir():
            raise TunesmithError(f"{what}: folder {path.parent} does not exist; create it first")
        return path

    def model(self, text: str | None, what: str = "model path") -> str:
        """A model location: 'pkg:NAME' as typed, or an existing path."""
        if text and text.strip().startswith(PACKAGE_PREFIX):
            return text.strip()
        return str(self.existing(text, what))

    def _inside(self, text: str | None, what: str) -> Path:
        if not text or not str(text).strip():
            raise TunesmithError(f"{what} is empty; type a path")
        path = self._absolute(str(text).strip())
        if self.roots and not any(path == root or path.is_relative_to(root) for root in self.roots):
            allowed = ", ".join(str(root) for root in self.roots)
            raise TunesmithError(f"{what}: {text} is outside the allowed folders ({allowed}); pick a path inside them")
        return path

    def _absolute(self, text: str | Path) -> Path:
        path = Path(text).expanduser()
        # resolve() follows symlinks, so a link cannot lead outside an allowed root.
        return (path if path.is_absolute() else self.base / path).resolve()
