"""The glibc heap in CPU training: the malloc settings, a note for runs that go without them, and free pages handed
back between decoder layers.

glibc before 2.38 (Debian 12 has 2.36) serves every PyTorch CPU tensor, a 64-byte-aligned block, by splitting a
larger one; tcache and fastbins keep the small pieces split off, so a freed tensor cannot merge back into a
block the next request of its size fits, and the heap grows past its use (SmolLM2 LoRA, packed, 2,048 tokens a
step: 4.70 GB peak instead of 3.40). With the heap kept (up to glibc's 32 MiB mmap cap) freed tensors are reused
instead of mapped and page-faulted anew every step (the quickstart: 50 target tokens/s of CPU time instead of
33). glibc reads these at process start: they go into the launching shell, as scripts/quickstart.sh does.

Even so, a forward pass leaves holes: each layer's temporaries are freed between the activations it keeps, and
later, larger requests do not fit them (SmolLM2 full fine-tuning: ~0.85 GB of the heap free but resident when
the forward pass ends). glibc's malloc_trim hands the pages of free blocks back to the system; run after every
sixth decoder layer, forward and backward, it keeps the holes out of the peak, and the few pages reused soon
after are faulted in again: SmolLM2-135M full fine-tuning, packed, 2,048 tokens a step: peak 4.83 -> 3.95 GB
for ~4% more time per step (every layer: 3.88 GB, ~10%).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

GLIBC_SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
    "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0",
}
FIXED_IN = (2, 38)  # memalign looks for a fitting free block first
LAYERS_PER_RELEASE = 6  # SmolLM2 full: every 6th layer keeps 93% of every layer's saving at 40% of its time


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


def free_page_releaser(device_type: str, libc: tuple[str, str] | None = None) -> Callable[[], None] | None:
    """A function that hands the heap's free pages back to the system, for CPU training on glibc; None elsewhere
    (GPU memory is not glibc's; other C libraries have no malloc_trim)."""
    name, _ = libc or _running_libc()
    if device_type != "cpu" or name != "glibc":
        return None
    trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols, glibc's among them
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def release() -> None:
        trim(0)  # 0: no padding kept at the heap's top

    return release


def release_between_layers(model, release: Callable[[], None]) -> int:
    """Call `release` after every LAYERS_PER_RELEASE-th decoder layer of `model` in a training forward pass, and
    once the backward pass is through it; returns how many layers. Forward passes without gradients (evaluation,
    generation: a pass per token) keep little and release nothing."""
    import torch

    from tunesmith.model.methods import decoder_layer_modules

    def release_hook(*_) -> None:  # (a hook's return value would replace the output or gradient it is given)
        release()

    def release_after_forward(layer, args, kwargs, output) -> None:
        if torch.is_grad_enabled():
            release()

    def release_after_backward(layer, args, kwargs) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if torch.is_grad_enabled() and getattr(hidden, "requires_grad", False):
            hidden.register_hook(release_hook)  # runs once the gradient of the layer's input is computed

    chosen = decoder_layer_modules(model)[LAYERS_PER_RELEASE - 1::LAYERS_PER_RELEASE]
    for layer in chosen:
        layer.register_forward_pre_hook(release_after_backward, with_kwargs=True)
        layer.register_forward_hook(release_after_forward, with_kwargs=True)
    return len(chosen)


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
