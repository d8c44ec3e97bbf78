"""What a forward pass leaves held for the backward pass: the bytes of the tensors it created that are still
alive once it is done, parameters and its own output aside."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _CreatedTensors(TorchDispatchMode):
    """Weak references to every tensor an operator returns while the mode is on."""

    def __init__(self):
        super().__init__()
        self.created: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        self.created += [weakref.ref(leaf) for leaf in tree_leaves(output) if isinstance(leaf, torch.Tensor)]
        return output


def held_for_backward_bytes(model, forward: Callable[[], object]) -> int:
    """Run `forward()` (a forward pass of `model`) and count the storages it created that its graph still holds.

    Counted below autograd, at the operators, not through saved-tensor hooks: the tensors peft's DoRA saves on
    graph branches that the forward then drops are freed (their addresses reused by later ones), and
    model/recompute.py keeps recipes instead of some tensors, but only while no other saved-tensor hook runs.
    What is alive once the forward is done is what an estimate means.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with _CreatedTensors() as mode:
        output = forward()  # held until the count: its graph keeps what it saved alive
    returned = {leaf.untyped_storage().data_ptr() for leaf in tree_leaves(output) if isinstance(leaf, torch.Tensor)}
    storages = {}
    for ref in mode.created:
        tensor = ref()
        if tensor is None:
            continue
        address = tensor.untyped_storage().data_ptr()
        if address not in params and address not in returned:
            storages[address] = tensor.untyped_storage().nbytes()
    del output
    return sum(storages.values())
