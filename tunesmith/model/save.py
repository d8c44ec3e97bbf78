"""Write what a run trained: the adapter (or whole model) and the tokenizer with its chat template.

The final save is atomic as far as any reader can tell: everything is written and fsynced in a staging folder
first, then renamed into the run folder with the files that make a folder loadable (config.json,
adapter_config.json) last. A kill at any point leaves the run folder as it was, or the complete run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunesmith.durable import fsync_folder, fsync_tree

STAGING_FOLDER = ".final-save.tmp"
LOADABLE_MARKERS = ("config.json", "adapter_config.json")  # loaders take a folder holding one as a model


def save_trained(model, tokenizer, template_source: str, folder: Path, state_dict: dict | None = None) -> None:
    """Hugging Face layout in safetensors; the chat template used in training goes with the tokenizer.

    state_dict: the weights to write in place of the model's own (see save_weights)."""
    staging = Path(folder) / STAGING_FOLDER
    shutil.rmtree(staging, ignore_errors=True)  # a save killed earlier
    staging.mkdir(parents=True)
    save_weights(model, staging, state_dict)
    tokenizer.chat_template = template_source
    tokenizer.save_pretrained(staging)
    fsync_tree(staging)
    for written in sorted(staging.iterdir(), key=lambda path: path.name in LOADABLE_MARKERS):
        os.replace(written, Path(folder) / written.name)
    fsync_folder(Path(folder))
    staging.rmdir()


def save_weights(model, folder: Path, state_dict: dict | None = None) -> None:
    """The model's weights as `save_pretrained` writes them (the adapter only, for a peft model).

    state_dict: the model's weights keyed as in `model.state_dict()`, written in place of the ones the model
    holds: under ZeRO-3 each process holds only a shard, so the full weights are gathered first (and may leave out
    frozen weights, which an adapter does not save)."""
    model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)

