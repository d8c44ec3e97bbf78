"""The glibc malloc settings for CPU training, and a note for runs that go without them.

glibc before 2.38 (Debian 12 has 2.36) serves every PyTorch CPU tensor, a 64-byte-aligned block, by splitting a
larger one; tcache and fastbins keep the small pieces split off, so a freed tensor cannot merge back into a
block the next request of its size fits, and the heap grows past its use (SmolLM2 LoRA, packed, 2,048 tokens a
step: 4.70 GB peak instead of 3.40). With the heap kept (up to glibc's 32 MiB mmap cap) freed tensors are reused
instead of mapped and page-faulted anew every step (the quickstart: 50 target tokens/s of CPU time instead of
33). glibc reads these at process start: they go into the launching shell, as scripts/quickstart.sh does.
"""

from __future__ import annotations

import os

GLIBC_SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0",
}
FIXED_IN = (2, 38)  # memalign looks for a fitting free block first


def malloc_note(device_type: str, environ=os.environ,  # env-ok: glibc's own variables, read to not override them
                libc: tuple[str, str] | None = None) -> str | None:
    """What to export for CPU training on an older glibc, unless the user set any of it (their choice)."""
    name, version = libc or _running_libc()
    if device_type != "cpu" or name != "glibc" or _parse(version) >= FIXED_IN:
        return None
    if any(key in environ for key in GLIBC_SETTINGS):
        return None
    exports = " ".join(f"{key}={value}" for key, value in GLIBC_SETTINGS.items())
    return (f"note: glibc {version}'s heap grows past its use in CPU training (SmolLM2: ~1.4x the peak memory); "
            f"export {exports} before tunesmith train (README: Speed on CPU)")


def _running_libc() -> tuple[str, str]:
    """(name, version) of the C library this process runs on (the platform module reports the one the
    interpreter was built against)."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    except (ValueError, OSError, AttributeError):  # not glibc, or no confstr
        return "", ""
    return name, version


def _parse(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return FIXED_IN  # an unreadable version: say nothing
