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
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)

