"""Gated MLPs (SwiGLU, GeGLU) that keep two of their three intermediate tensors for the backward pass.

A gated MLP computes down(act(gate(x)) * up(x)). Left to autograd, it keeps gate(x) (for act's backward),
act(gate(x)) and up(x) (for the product's), each tokens x intermediate wide: a third of a decoder layer's saved
activations between them. act(gate(x)) is cheap to compute again from gate(x), so the product here keeps only
gate(x) and up(x) and recomputes act in its backward. The forward is the same arithmetic and the gradients are
bit-for-bit autograd's (the same kernels on the same inputs); only the memory differs: one tokens x intermediate
tensor less per layer (the quickstart's peak, SmolLM2-135M: ~0.25 GB lower). The product itself, which the
down projection keeps as its input, is recomputed from gate and up too (model/recompute.py). Liger's fused SwiGLU
(train.kernels: liger) does the same in a Triton kernel on GPUs; this is the default everywhere else.
"""

from __future__ import annotations

import functools
import inspect
import re
import types

import torch

from tunesmith.model.recompute import remember

# The one forward this swaps out; classes that clamp, scale, normalise or drop out between the steps keep theirs.
_PLAIN_FORWARD = re.compile(r"self\.down_proj\(self\.act_fn\(self\.gate_proj\((\w+)\)\) \* self\.up_proj\(\1\)\)")


class _ActTimesUp(torch.autograd.Function):
    """act(gate) * up, saving gate and up only."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, act) -> torch.Tensor:
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        if _is_silu(ctx.act):  # as many tensors allocated as autograd's own backward, and one elementwise pass more
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
            return grad_gate, torch.nn.functional.silu(gate).mul_(grad), None
        with torch.enable_grad():
            leaf = gate.detach().requires_grad_(True)
            activated = ctx.act(leaf)
        grad_up = grad * activated.detach()
        return torch.autograd.grad(activated, leaf, grad * up)[0], grad_up, None


def _is_silu(act) -> bool:
    cls = type(act)
    return isinstance(act, torch.nn.SiLU) or (cls.__name__, cls.__module__) == ("SiLUActivation",
                                                                                "transformers.activations")


def is_gated_mlp(module) -> bool:
    """Whether `module` is a gated MLP whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x)), as
    the Llama, Mistral, Qwen and Gemma families' *MLP classes are (read from the class's own source)."""
    return _plain_gated_class(type(module))


@functools.cache
def _plain_gated_class(cls) -> bool:
    if not cls.__name__.endswith("MLP"):
        return False
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    body = [line.strip() for line in source.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
    # One statement computing the formula, then its return (or the return of the formula itself).
    return bool(body) and len(body) <= 2 and _PLAIN_FORWARD.search(body[0]) is not None


def _recomputing_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():  # inference, a frozen reference: nothing is saved either way
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = _ActTimesUp.apply(gate, up, self.act_fn)
    # The down projection's input, kept for its weight's (or LoRA's) gradient: built again from gate and up.
    remember(product, lambda: self.act_fn(gate) * up)
    return self.down_proj(product)


def recompute_mlp_activations(model) -> int:
    """Give every gated MLP of `model` the forward above (in place, instance by instance); returns how many."""
    swapped = 0
    for module in model.modules():
        if is_gated_mlp(module):
            module.forward = types.MethodType(_recomputing_forward, module)
            swapped += 1
    return swapped
