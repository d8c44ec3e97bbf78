"""Write what a run trained: the adapter (or whole model) and the tokenizer with its chat template."""

from __future__ import annotations

from pathlib import Path


def save_trained(model, tokenizer, template_source: str, folder: Path, state_dict: dict | None = None) -> None:
    """Hugging Face layout in safetensors; the chat template used in training goes with the tokenizer.

    state_dict: the weights to write in place of the model's own (see save_weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder, state_dict)
    tokenizer.chat_template = template_source
    tokenizer.save_pretrained(folder)


def save_weights(model, folder: Path, state_dict: dict | None = None) -> None:
    """The model's weights as `save_pretrained` writes them (the adapter only, for a peft model).

    state_dict: the model's weights keyed as in `model.state_dict()`, written in place of the ones the model
    holds: under ZeRO-3 each process holds only a shard, so the full weights are gathered first (and may leave out
    frozen weights, which an adapter does not save)."""
    from tunesmith.model.value_head import ValueHeadModel

    if state_dict is None:
        model.save_pretrained(folder, safe_serialization=True)
    elif isinstance(model, ValueHeadModel):
        _save_value_head_model(model, folder, state_dict)
    else:
        model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)


def _save_value_head_model(model, folder: Path, state_dict: dict) -> None:
    """The files ValueHeadModel.save_pretrained writes (the backbone's own, and the head beside them), from
    `state_dict`, whose keys carry the wrapper's backbone. / head. prefixes."""
    from safetensors.torch import save_file

    from tunesmith.model.value_head import VALUE_HEAD_FILE

    parts: dict[str, dict] = {"backbone.": {}, "head.": {}}
    for key, value in state_dict.items():
        prefix = next(p for p in parts if key.startswith(p))
        parts[prefix][key[len(prefix):]] = value
    model.backbone.save_pretrained(folder, state_dict=parts["backbone."], safe_serialization=True)
    save_file({key: value.contiguous() for key, value in parts["head."].items()}, str(Path(folder) / VALUE_HEAD_FILE))


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()
