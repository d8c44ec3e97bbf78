"""Write what a run trained: the adapter (or whole model) and the tokenizer with its chat template."""

from __future__ import annotations

from pathlib import Path


def save_trained(model, tokenizer, template_source: str, folder: Path) -> None:
    """Hugging Face layout in safetensors; the chat template used in training goes with the tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.chat_template = template_source
    tokenizer.save_pretrained(folder)


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()
