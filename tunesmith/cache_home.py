"""Where tunesmith keeps what it can rebuild: Hugging Face folders converted from GGUF, tokenized data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """$XDG_CACHE_HOME/tunesmith, else ~/.cache/tunesmith. Read at each call, not import, so that the XDG
    convention can move it (a shared machine, a test session's temporary folder)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "tunesmith"
