"""Training methods: which weights train and how. The only module that knows lora / full / freeze."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.config.schema import MethodConfig
from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


def apply_method(model, method: MethodConfig):
    """The model, prepared so that exactly the method's parameters require gradients."""
    if method.kind == "full":
        model.requires_grad_(True)
        return model
    if method.kind == "freeze":
        return _freeze_all_but_last_layers(model, method.freeze.layers)
    return _add_lora(model, method)


def _add_lora(model, method: MethodConfig):
    from peft import LoraConfig, get_peft_model

    lora = method.lora
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.targets,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise TunesmithError(f"method.lora.targets: {err}") from None


def _freeze_all_but_last_layers(model, n_layers: int):
    layers = _decoder_layers(model)
    if n_layers > len(layers):
        raise TunesmithError(f"method.freeze.layers is {n_layers} but the model has {len(layers)} layers")
    model.requires_grad_(False)
    for layer in layers[-n_layers:]:
        layer.requires_grad_(True)
    return model


def _decoder_layers(model):
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and type(module[0]).__name__.endswith("Layer"):
            return module
    raise TunesmithError("method freeze: could not find the decoder layers of this model; use lora or full")


def count_parameters(model) -> ParamCount:
    """Trainable and total parameters, counted as peft counts them (4-bit weights count twice their numel)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return ParamCount(trainable, total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(trainable, total)
