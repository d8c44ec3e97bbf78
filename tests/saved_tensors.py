"""What autograd holds for the backward pass after a forward: the bytes of the distinct tensors it saved that are
still alive, parameters aside."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch


def alive_saved_bytes(model, forward: Callable[[], object]) -> int:
    """Run `forward()` (a forward pass of `model`) and count what it saved for backward.

    Only weak references are taken: peft's DoRA builds graph branches that the forward then drops, freeing what
    they saved, and the allocator hands that memory to later tensors. Counting addresses as they are saved
    miscounted either way, by run; counting what is alive once the forward is done is what an estimate means.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = []

    def keep(tensor):
        saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        output = forward()  # held until the count: its graph keeps the saved tensors alive
    storages = {}
    for ref in saved:
        tensor = ref()
        if tensor is not None and tensor.untyped_storage().data_ptr() not in params:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    del output
    return sum(storages.values())
