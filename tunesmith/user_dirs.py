"""tunesmith's own folders in the user's home: the cache (tokenized data, converted GGUF models) and the
config folder (the key that signs checkpoint manifests). They follow the XDG base-directory locations, so a
test or a sandbox points them elsewhere with XDG_CACHE_HOME / XDG_CONFIG_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Read at each call, not at import, so that XDG_CACHE_HOME can move it (a test session's temp folder)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunesmith"  # env-ok: XDG base dirs


def config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "tunesmith"  # env-ok: XDG base dirs
