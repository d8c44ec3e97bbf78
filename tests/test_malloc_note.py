"""The glibc malloc note for CPU training (train/malloc_note.py), and scripts/quickstart.sh exporting its settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunesmith.train.malloc_note import GLIBC_SETTINGS, malloc_note

REPO = Path(__file__).resolve().parents[1]


def test_cpu_training_on_an_older_glibc_without_settings_is_told_every_export():
    note = malloc_note("cpu", environ={}, libc=("glibc", "2.36"))
    assert note is not None and "glibc 2.36" in note
    for key, value in GLIBC_SETTINGS.items():
        assert f"{key}={value}" in note


@pytest.mark.parametrize("device, environ, libc", [
    ("cuda", {}, ("glibc", "2.36")),  # GPU tensors are not glibc's
    ("cpu", {"MALLOC_MMAP_THRESHOLD_": "1048576"}, ("glibc", "2.36")),  # the user chose settings of their own
    ("cpu", {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ("glibc", "2.36")),
    ("cpu", {}, ("glibc", "2.38")),  # memalign reuses fitting free blocks
    ("cpu", {}, ("glibc", "2.40")),
    ("cpu", {}, ("", "")),  # musl, macOS
])
def test_no_note_where_it_does_not_apply(device, environ, libc):
    assert malloc_note(device, environ=environ, libc=libc) is None


def test_quickstart_exports_exactly_these_settings():
    script = (REPO / "scripts" / "quickstart.sh").read_text()
    exported = dict(re.findall(r"^export (\w+)=\$\{\1:-([^}]+)\}$", script, flags=re.MULTILINE))
    assert exported == GLIBC_SETTINGS
