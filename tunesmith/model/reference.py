"""The frozen reference policy of preference and RL stages, without stages knowing the method.

With an adapter (LoRA, QLoRA) the reference is the same network with the adapter switched off, so no second
copy sits in memory; otherwise (full, freeze) it is a frozen copy taken before training starts. Under DeepSpeed
ZeRO-3 the policy is loaded partitioned (each process holds a shard of every weight), and so is the copy.
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

    def __init__(self, policy, deepspeed_config: dict | None = None):
        """deepspeed_config: the run's, needed when ZeRO-3 has partitioned the policy's weights."""
        self.frozen = None
        if has_adapter(policy):
            return
        policy = unwrap(policy)
        self.frozen = _partitioned_copy(policy, deepspeed_config) if is_partitioned(policy) else _frozen_copy(policy)

    def to(self, device) -> "Reference":
        if self.frozen is not None and not is_partitioned(self.frozen):  # DeepSpeed places its own shards
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


def is_partitioned(model) -> bool:
    """Whether ZeRO-3 holds the model's weights as shards (its parameters then carry DeepSpeed's ds_id)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())


def _frozen_copy(model):
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    return frozen.eval()


def _partitioned_copy(model, deepspeed_config: dict | None):
    """A frozen copy of a ZeRO-3 model, partitioned alike, as its own inference engine (as TRL builds its reference).

    deepcopy would copy only this process's shard and the empty placeholders that stand for the whole weights.
    The copy is built partitioned the same way, so each shard is copied into its counterpart without gathering
    the model; the engine gathers each layer's weights for its forward pass, as the policy's engine does."""
    import deepspeed
    from transformers.initialization import no_init_weights

    from tunesmith.errors import TunesmithError

    if deepspeed_config is None:
        raise TunesmithError("the policy's weights are partitioned by ZeRO-3, but no DeepSpeed config was given "
                             "to partition its reference alike")
    # No initialisation: every weight is overwritten, and transformers' initialisers cannot see ZeRO-3's shards.
    # No dtype either: Init takes it from the config's precision, as for the policy (given one, DeepSpeed 0.19
    # replaces it by bf16 on accelerators without fp16, CPUs among them).
    with no_init_weights(), deepspeed.zero.Init(config_dict_or_path=deepspeed_config):
        frozen = type(model)(model.config)
    frozen.tie_weights()  # as loading does: tied embeddings are one parameter
    mine, theirs = dict(frozen.named_parameters()), dict(model.named_parameters())
    buffers, their_buffers = dict(frozen.named_buffers()), dict(model.named_buffers())
    if mine.keys() != theirs.keys() or buffers.keys() != their_buffers.keys():
        raise TunesmithError(f"could not copy a ZeRO-3-partitioned {type(model).__name__} as the reference "
                             "model; use a LoRA method (its reference is the policy with the adapter off)")
    for name, param in mine.items():
        param.ds_tensor.data.copy_(theirs[name].ds_tensor.data)
    for name, buffer in buffers.items():  # never partitioned (e.g. rotary frequencies), and initialisation skipped
        buffer.copy_(their_buffers[name])
    frozen.requires_grad_(False)
    engine, *_ = deepspeed.initialize(model=frozen, config=deepspeed_config)
    engine.eval()  # the engine's eval returns None, not the engine
    return engine
