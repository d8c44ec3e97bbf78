"""Training methods: which weights train and how. The only module that knows full / freeze / lora / qlora.

Stages get the model this module returns and never ask which method made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.config.method_kinds import MethodConfig
from tunesmith.errors import TunesmithError
from tunesmith.model.peft_warnings import quiet_peft


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
    from tunesmith.model.vision import is_vision_model, set_vision_trainable

    if method.kind in ("full", "freeze"):
        if method.kind == "full":
            model.requires_grad_(True)
        else:
            model = _freeze_all_but(model, method.layers, method.modules)
        if is_vision_model(model):
            set_vision_trainable(model, method.vision.train_tower, method.vision.train_projector)
        return model
    if method.kind == "qlora":
        from tunesmith.model.quantize import is_quantized

        if not is_quantized(model):
            raise TunesmithError("method.kind qlora needs a quantized base; set model.quantization_bit to 4 or 8")
    return _add_lora(model, method)


def _add_lora(model, method: MethodConfig):
    """peft LoRA (or DoRA / rsLoRA) on the targets; peft freezes every other weight.

    A quantized base is used as loaded: peft's `prepare_model_for_kbit_training` is not called because it
    would upcast every unquantized weight to float32 (twice the memory of bf16) and switch on gradient
    checkpointing, which is the loop's decision (train.gradient_checkpointing).
    """
    from peft import LoraConfig, get_peft_model

    from tunesmith.model.vision import is_vision_model, lora_targets, projector_name

    lora = method
    targets, to_save = lora.targets, list(lora.modules_to_save)
    if is_vision_model(model):
        if targets == "all-linear":
            targets = lora_targets(model, method.vision.train_tower)
        if method.vision.train_projector:
            to_save.append(projector_name(model))
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        target_parameters=lora.target_parameters or None,
        use_dora=lora.dora,
        use_rslora=lora.rslora,
        modules_to_save=to_save or None,
        task_type="CAUSAL_LM",
    )
    try:
        with quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise TunesmithError(f"method.targets / target_parameters: {err}; name linear layers (or, in "
                             "target_parameters, weights) of this model, or use all-linear") from None
    _check_modules_to_save(peft_model, to_save)
    return peft_model


def _check_modules_to_save(peft_model, names: list[str]) -> None:
    """peft skips a modules_to_save name that matches nothing; a typo there must not train nothing silently."""
    from peft.utils import ModulesToSaveWrapper

    wrapped = [name for name, module in peft_model.named_modules() if isinstance(module, ModulesToSaveWrapper)]
    for name in names:
        if not any(_name_has_part(path, name) for path in wrapped):
            raise TunesmithError(
                f"method.modules_to_save: '{name}' matches no module; use names such as embed_tokens, lm_head"
            )


def _freeze_all_but(model, n_layers: int, module_names: list[str]):
    """Train the last `n_layers` decoder layers and every parameter under a module named in `module_names`."""
    layers = decoder_layers(model)
    if n_layers > len(layers):
        raise TunesmithError(f"method.layers is {n_layers} but the model has {len(layers)} layers")
    model.requires_grad_(False)
    for layer in layers[len(layers) - n_layers:]:
        layer.requires_grad_(True)
    named = dict(model.named_parameters())
    for wanted in module_names:
        matched = [param for name, param in named.items() if _name_has_part(name, wanted)]
        if not matched:
            raise TunesmithError(
                f"method.modules: '{wanted}' matches no module; use names such as embed_tokens, mlp, "
                "self_attn, lm_head or a dotted part like layers.0"
            )
        for param in matched:
            param.requires_grad_(True)
    return model


def _name_has_part(dotted_name: str, part: str) -> bool:
    """True when `part` (e.g. 'mlp' or 'layers.3') is a whole run of components of `dotted_name`."""
    return f".{part}." in f".{dotted_name}."


def decoder_layers(model):
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and type(module[0]).__name__.endswith("Layer"):
            return module
    raise TunesmithError("method freeze: could not find the decoder layers of this model; use lora or full")


def decoder_layer_modules(model) -> list:
    """Every decoder layer of `model` (a module whose class is a *DecoderLayer), in order; none for other models.
    For hooks that apply where they find layers; `decoder_layers` is for methods that need them."""
    return [module for module in model.modules() if type(module).__name__.endswith("DecoderLayer")]


def count_parameters(model) -> ParamCount:
    """Trainable and total parameters, counted as peft counts them (4-bit weights count twice their numel)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return ParamCount(trainable, total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParamCount(trainable, total)
