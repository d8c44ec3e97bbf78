"""The merged model as a Hugging Face folder: safetensors shards with their index, the tokenizer carrying
the chat template used in training, and a generation_config whose EOS tokens end a reply."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.errors import TunesmithError

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes in '5GB' (decimal units, as Hugging Face counts) or '4GiB' (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise TunesmithError(f"export.max_shard_size {text!r} is not a size; write e.g. 5GB, 500MB or 4GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def save_model(model, folder: Path, dtype, max_shard_size: str) -> None:
    model.to(dtype)
    model.config.use_cache = True  # training may switch the cache off; a deployed model wants it
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=parse_size(max_shard_size))


def save_tokenizer(tokenizer, template_source: str, folder: Path) -> None:
    tokenizer.chat_template = template_source
    tokenizer.save_pretrained(folder)


def save_generation_config(model, base_location: str, stop_ids: list[int], tokenizer, folder: Path) -> None:
    """The base model's generation defaults, with EOS set to every token that ends an assistant reply."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(base_location)
    except OSError:  # the base ships none
        generation = GenerationConfig.from_model_config(model.config)
    generation.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else list(stop_ids)
    generation.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        generation.bos_token_id = tokenizer.bos_token_id
    generation.save_pretrained(folder)


def folder_size(folder: Path, pattern: str = "*.safetensors") -> int:
    return sum(path.stat().st_size for path in Path(folder).glob(pattern))
