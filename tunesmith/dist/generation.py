"""Whole weights for the generation of online stages (ppo, grpo) under DeepSpeed ZeRO-3.

ZeRO-3 holds a shard of each weight per process and gathers a layer's weights, collectively, in hooks around
its forward pass. Generation runs a different number of forward passes in each process (replies end at
different lengths), so those collective gathers would wait on each other forever. For the rollout the weights
are gathered once, whole, and ZeRO-3's hooks are taken off the model; they are put back afterwards, with the
layer-order trace they record invalidated, since the generation passes did not follow it.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def whole_weights(model):
    """Within: the model's weights are whole in every process, and its forward passes are local. `model` is
    what the loop trains (a DeepSpeed engine, a DDP wrapper or the model itself); all processes enter together."""
    offload = _zero3_offload(model)
    if offload is None:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.module.parameters())):
        for param in model.module.parameters():
            param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:  # re-registering on the root module also invalidates the trace
            offload._register_deepspeed_module(offload.module)


def _zero3_offload(model):
    """The engine's ZeRO-3 parameter manager (which owns the hooks), or None when weights are whole."""
    if not callable(getattr(model, "zero_optimization_partition_weights", None)):
        return None
    if not model.zero_optimization_partition_weights():
        return None
    return getattr(model.optimizer, "parameter_offload", None)

