"""The weights a policy serves with, under the base model's own parameter names: what an inference engine that
loads a plain Hugging Face checkpoint (vLLM's `load_weights`) needs to sample from the model being trained.

Full and freeze training change the weights in place, so they are the model's parameters. LoRA's are folded in
as weight + B @ A * scaling, computed per layer into a new tensor (peft's `get_delta_weight`): the trained model is
never merged and unmerged in place, so its base weights stay bit-exact from update to update (an in-place
merge/unmerge rounds them a little each time, and a resumed run would not follow the uninterrupted one).
"""

from __future__ import annotations

from typing import Iterator

import torch

from tunesmith.errors import TunesmithError

PEFT_PREFIX = "base_model.model."


def check_servable(model) -> None:
    """Refuse the adapters whose folded weights get_delta_weight does not give (DoRA rescales whole columns),
    and quantized bases (their weights are not plain tensors to hand over)."""
    for name, module in model.named_modules():
        if any(getattr(module, "use_dora", {}).values()):
            raise TunesmithError(f"{name}: DoRA adapters cannot be synced to vLLM rollouts yet; use plain LoRA "
                                 "(method.dora false) or stage.rollout_backend hf")
        weight = getattr(module, "weight", None)
        if weight is not None and type(weight).__name__ in ("Params4bit", "Int8Params"):
            raise TunesmithError(f"{name}: a quantized (qlora) base cannot be synced to vLLM rollouts; use method "
                                 "lora or stage.rollout_backend hf")


@torch.no_grad()
def served_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of `model` (a transformers model, peft-wrapped or not), adapters folded
    in, named as in the base model's checkpoint. Tied weights come once, as named_parameters gives them."""
    adapter = _active_adapter(model)
    if adapter is None:
        yield from model.named_parameters()
        return
    layers = dict(model.named_modules())
    for name, param in model.named_parameters():
        if ".lora_" in name or ".original_module." in name:  # adapter factors; the copy modules_to_save replaced
            continue
        tensor = param
        if name.endswith(".base_layer.weight"):
            layer = layers[name.removesuffix(".base_layer.weight")]
            if adapter in getattr(layer, "lora_A", {}) and adapter not in getattr(layer, "merged_adapters", []):
                tensor = param + layer.get_delta_weight(adapter).to(param.dtype)
        yield _base_name(name, adapter), tensor


def _active_adapter(model) -> str | None:
    """peft's active adapter name, None for a model without adapters."""
    if not hasattr(model, "peft_config"):
        return None
    active = model.active_adapter
    return active[0] if isinstance(active, list) else active


def _base_name(name: str, adapter: str) -> str:
    return name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".").replace(f".modules_to_save.{adapter}.", ".")
