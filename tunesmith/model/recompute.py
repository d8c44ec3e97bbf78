"""Tensors the backward pass needs that are cheaper to compute again than to keep: norm outputs, act(gate) * up.

Inside a decoder layer autograd keeps the input of every linear layer that trains or carries LoRA, for its
weight gradient. Two kinds of those inputs are one elementwise step from tensors that are kept anyway:
- a norm's output (RMSNorm, LayerNorm), from the norm's input, which the norm keeps for its own backward
  (a 16-bit input as a float32 copy: keeping the input then costs what keeping the output did);
- a gated MLP's act(gate) * up, the down projection's input, from gate and up, which model/gated_mlp.py keeps.
Where a norm's weight trains, an RMSNorm also keeps its normalised float32 input, x / rms(x), for the weight's
gradient: one formula from the same input. The formula is checked against the tensor once, when it is saved
(the same kernels on the same input give it bit for bit); a norm whose normalised input it does not give keeps
the tensor.
While a decoder layer runs its forward, a saved-tensor hook stores such a tensor as a recipe (the inputs
above, by reference) and the backward pass computes it again when it asks for it: the same kernels on the same
inputs, so every value and gradient is what it was. The memory is one tokens x hidden tensor less per norm
whose input is kept and one tokens x intermediate tensor less per gated MLP (SmolLM2-135M at 2,048 tokens,
float32: 0.66 GB of its 2.1 GB of saved activations) and, when the norms train, one tokens x hidden tensor more
per norm (SmolLM2 full fine-tuning: 0.28 GB more).

A layer that runs under another saved-tensor hook (gradient checkpointing, offloading, a profiler) leaves
everything to it. Norms whose weights are sharded (ZeRO-3, FSDP) keep their outputs: their weights are
gathered for the norm's own passes only.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable

import torch

from tunesmith.dist.sharding import is_sharded

_state = threading.local()  # .layers: one {storage address: recipe} per decoder layer running under the hook;
# .norm: (input, epsilon) of the RMSNorm whose forward runs under it, while it runs


def _open_layers() -> list[dict]:
    if not hasattr(_state, "layers"):
        _state.layers = []
    return _state.layers


class _Recipe:
    """How to compute a tensor again: `compute()` under the autocast state it was first computed in."""

    __slots__ = ("compute", "source", "shape", "dtype", "autocast")

    def __init__(self, tensor: torch.Tensor, compute: Callable[[], torch.Tensor]):
        self.compute = compute
        self.source = weakref.ref(tensor)  # identifies the tensor while it lives; never keeps it alive
        self.shape, self.dtype = tensor.shape, tensor.dtype
        device = tensor.device.type
        self.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))

    def rebuild(self) -> torch.Tensor:
        device, dtype, enabled = self.autocast
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            tensor = self.compute()
        if tensor.shape != self.shape or tensor.dtype != self.dtype or not tensor.is_contiguous():
            raise RuntimeError(f"a recomputed activation came back as {tuple(tensor.shape)} {tensor.dtype}, "
                               f"not {tuple(self.shape)} {self.dtype}")
        return tensor


class _Rebuilt:
    """What the hook stores instead of a (view of a) recipe's tensor."""

    __slots__ = ("recipe", "size", "stride", "offset")

    def __init__(self, recipe: _Recipe, view: torch.Tensor):
        self.recipe = recipe
        self.size, self.stride, self.offset = view.size(), view.stride(), view.storage_offset()


def remember(tensor: torch.Tensor, compute: Callable[[], torch.Tensor]) -> None:
    """Let the running layer's hook store `tensor` (or a view of it) as `compute`, which must give it again."""
    layers = _open_layers()
    if layers and tensor.is_contiguous() and tensor.numel():
        layers[-1][tensor.untyped_storage().data_ptr()] = _Recipe(tensor, compute)


def _pack(tensor: torch.Tensor):
    recipe = _open_layers()[-1].get(tensor.untyped_storage().data_ptr())
    source = recipe.source() if recipe is not None else None
    # While the recipe's tensor lives no other storage has its address; views of it share its storage.
    if source is None or source.dtype != tensor.dtype:
        return _normalised_input(tensor) or tensor
    return _Rebuilt(recipe, tensor)


def _normalised_input(tensor: torch.Tensor) -> _Rebuilt | None:
    """The running RMSNorm's x / rms(x) as a recipe, if `tensor` is that (checked bit for bit); else None."""
    running = getattr(_state, "norm", None)
    if running is None or tensor.dtype != torch.float32 or not tensor.is_contiguous():
        return None
    norm_input, epsilon = running
    if tensor.shape != norm_input.shape or tensor.untyped_storage().data_ptr() == \
            norm_input.untyped_storage().data_ptr():
        return None
    recipe = _Recipe(tensor, functools.partial(_rms_normalised, norm_input, epsilon))
    return _Rebuilt(recipe, tensor) if torch.equal(recipe.rebuild(), tensor) else None


def _rms_normalised(x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """x / rms(x) in float32, in the steps transformers' RMSNorms (Llama, Qwen, Mistral, Gemma) take."""
    x = x.to(torch.float32)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon)


def _unpack(saved):
    if type(saved) is not _Rebuilt:
        return saved
    return saved.recipe.rebuild().as_strided(saved.size, saved.stride, saved.offset)


def _outer_hooks_active() -> bool:
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is None or top(False) is not None  # unknown (another torch): assume one is


def _run_layer(forward, *args, **kwargs):
    if not torch.is_grad_enabled() or _outer_hooks_active():
        return forward(*args, **kwargs)
    layers = _open_layers()
    layers.append({})
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            return forward(*args, **kwargs)
    finally:
        layers.pop()
        _state.norm = None


def _enter_norm(norm, args, kwargs) -> None:
    epsilon = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    trains = any(p.requires_grad and not is_sharded(p) for p in norm.parameters())
    if _open_layers() and trains and isinstance(epsilon, float) and args and isinstance(args[0], torch.Tensor):
        _state.norm = (args[0], epsilon)


def _remember_norm_output(norm, args, kwargs, output) -> None:
    _state.norm = None
    if _open_layers() and isinstance(output, torch.Tensor) and not any(is_sharded(p) for p in norm.parameters()):
        remember(output, functools.partial(norm.forward, *args, **kwargs))


def is_norm(module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def recompute_cheap_activations(model) -> int:
    """Run every decoder layer of `model` under the hook, with its norms' outputs as recipes (in place,
    instance by instance); returns how many layers. Gated MLPs give their own recipe (model/gated_mlp.py)."""
    from tunesmith.model.methods import decoder_layer_modules

    layers = decoder_layer_modules(model)
    for layer in layers:
        layer.forward = functools.partial(_run_layer, layer.forward)
        for child in layer.children():
            if is_norm(child):
                if type(child).__name__.endswith("RMSNorm"):
                    child.register_forward_pre_hook(_enter_norm, with_kwargs=True)
                child.register_forward_hook(_remember_norm_output, with_kwargs=True)
    return len(layers)
