"""The frozen reference policy of preference and RL stages, without stages knowing the method.

With an adapter (LoRA, QLoRA) the reference is the same network with the adapter switched off, so no second
copy sits in memory; otherwise (full, freeze) it is a frozen copy taken before training starts.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager


def unwrap(model):
    """The model inside a distributed wrapper (DDP / FSDP keep it in `.module`)."""
    return getattr(model, "module", model)


def has_adapter(model) -> bool:
    """Whether the model is a peft model whose adapter can be switched off."""
    model = unwrap(model)
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Reference:
    """Runs forward passes with the reference weights, in eval mode (dropout off), without gradients."""

    def __init__(self, policy):
        self.frozen = None if has_adapter(policy) else _frozen_copy(unwrap(policy))

    def to(self, device) -> "Reference":
        if self.frozen is not None:
            self.frozen.to(device)
        return self

    @contextmanager
    def model(self, policy):
        """Yields a network that computes like the reference; `policy` is the (possibly wrapped) policy."""
        if self.frozen is not None:
            yield self.frozen
            return
        network = unwrap(policy)
        was_training = network.training
        network.eval()
        try:
            with network.disable_adapter():
                yield network
        finally:
            network.train(was_training)


def _frozen_copy(model):
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return frozen.eval()
