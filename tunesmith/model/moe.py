"""Mixture-of-experts models: the router's load-balancing loss during training, and active parameter counts.

Router logits are read with forward hooks on the router modules (the modules transformers itself records
`router_logits` from), so the loss path of every stage stays as it is: a stage's forward pass runs inside
`RouterLoss.recording()`, and the loss it returns gets the weighted auxiliary loss added afterwards.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import torch


class RouterLoss:
    """The router's auxiliary (load-balancing) loss of a MoE model; for a dense model, or a weight of 0, it adds
    nothing. The weight is `coef`, or the model config's router_aux_loss_coef when `coef` is None."""

    def __init__(self, model, coef: float | None):
        config = model.config
        self.coef = coef if coef is not None else float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0)
        self.num_experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
        self.top_k = getattr(config, "num_experts_per_tok", None)
        found = _router_modules(model)
        self.routers, self.index = found if found and self.coef and self.num_experts else ([], 0)
        self._recorded: list[torch.Tensor] | None = None

    @contextmanager
    def recording(self):
        """Keep the router logits of the forward passes run inside, those that build a graph (a reference
        model's no-grad pass on shared weights is left out). The loop runs backward after this context has removed
        the hooks, so gradient checkpointing's recomputed forwards are not recorded a second time."""
        handles = [router.register_forward_hook(self._record) for router in self.routers]
        self._recorded = []
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, module, inputs, output) -> None:
        if torch.is_grad_enabled():
            self._recorded.append(output[self.index] if isinstance(output, tuple) else output)

    def add_to(self, loss: torch.Tensor, metrics: dict, units: int, batch: dict) -> tuple[torch.Tensor, dict]:
        """(loss + coef * aux * units, metrics with aux * units as 'aux_loss'): weighted by the batch's units like
        the summed main loss, so the loop's division by the window's units averages both alike."""
        if not self._recorded:
            return loss, metrics
        aux = self.aux_loss(self._recorded, batch.get("attention_mask"))
        self._recorded = []
        return loss + self.coef * aux * units, {**metrics, "aux_loss": aux.detach() * units}

    def aux_loss(self, logits: list[torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The family's own load_balancing_loss_func from transformers (Switch Transformer's formula), padding
        excluded when the mask covers the routed tokens."""
        module = importlib.import_module(type(self.routers[0]).__module__)
        balance = getattr(module, "load_balancing_loss_func", None)
        if balance is None:
            from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func as balance
        if attention_mask is not None and attention_mask.numel() != logits[0].shape[0]:
            attention_mask = None  # several sequences per row (a preference pair): padding cannot be mapped
        return balance(tuple(logits), self.num_experts, self.top_k, attention_mask)


def _router_modules(model) -> tuple[list, int] | None:
    """(router modules, index of the logits in their output), as the model records router_logits."""
    for module in model.modules():
        recorder = (getattr(module, "_can_record_outputs", None) or {}).get("router_logits")
        if recorder is None:
            continue
        target, index = (recorder, 0) if isinstance(recorder, type) else (recorder.target_class, recorder.index)
        return [m for m in model.modules() if isinstance(m, target)], index
    return None


def active_parameters(model, total: int) -> int | None:
    """Parameters one token passes through: all but the experts it is not routed to (None for dense models)."""
    config = model.config
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    top_k = getattr(config, "num_experts_per_tok", None)
    if not experts or not top_k:
        return None
    expert_params = sum(param.numel() for name, param in model.named_parameters()
                        if ".experts." in f".{name}." and param.dim() >= 2 and param.shape[0] == experts)
    return total - expert_params + expert_params * top_k // experts
