"""Which tensors a GGUF file holds and how each is read: llama.cpp's names for the Hugging Face weights,
fused tensors split, norms and rotary rows put in llama.cpp's convention, and computed extras (rope_freqs).

Every weight of the model must have a rule; one without is an error naming it, never a file missing it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError
from tunesmith.export.gguf_arch import GgufArchitecture
from tunesmith.export.gguf_rope import ROPE_FREQS, llama3_rope_factors, needs_rope_freqs


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # llama.cpp's name, e.g. blk.0.attn_q.weight
    shape: tuple[int, ...]  # numpy order (rows last-but-one, row length last)
    read: Callable  # () -> float32 numpy array in llama.cpp's layout


def tensor_plan(arch: GgufArchitecture, source: "TensorSource") -> list[PlannedTensor]:
    """The file's tensors, in file order."""
    import gguf

    arch_id = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch.name)
    names = gguf.get_tensor_name_map(arch_id, arch.config.num_hidden_layers)
    plan = []
    if needs_rope_freqs(arch):
        factors = llama3_rope_factors(arch)
        plan.append(PlannedTensor(ROPE_FREQS, factors.shape, lambda: factors))
    experts = _expert_groups(source.names())
    for hf_name in source.names():
        if hf_name == "lm_head.weight" and arch.config.tie_word_embeddings:
            continue  # a GGUF without output.weight reuses token_embd, as the tied model does
        stacked = next((group for group, members in experts.items() if hf_name in members), None)
        if stacked is None:
            plan.extend(_planned(arch, names, source, hf_name))
        elif hf_name == experts[stacked][0]:
            plan.append(_stacked(arch, names, source, stacked, experts[stacked]))
    _check_vocab_rows(arch, plan)
    return plan


_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+)\.weight")


def _expert_groups(hf_names: list[str]) -> dict[str, list[str]]:
    """Per-expert matrices as checkpoints store them (experts.3.up_proj.weight), grouped under the fused
    name llama.cpp stores them as one 3-D tensor (experts.up_proj), in expert order."""
    groups: dict[str, dict[int, str]] = {}
    for hf_name in hf_names:
        match = _EXPERT.fullmatch(hf_name)
        if match:
            groups.setdefault(f"{match.group(1)}.{match.group(3)}", {})[int(match.group(2))] = hf_name
    return {group: [members[index] for index in sorted(members)] for group, members in groups.items()}


def _stacked(arch: GgufArchitecture, names, source: "TensorSource", group: str, members: list[str]):
    import numpy as np

    shape = (len(members), *source.shape(members[0]))
    return PlannedTensor(_gguf_name(arch, names, group), shape,
                         lambda: np.stack([source.read(member) for member in members]))


def _planned(arch: GgufArchitecture, names, source: "TensorSource", hf_name: str) -> list[PlannedTensor]:
    shape = source.shape(hf_name)
    read = partial(source.read, hf_name)
    parts = _split_rule(arch, hf_name)
    if parts:
        half = shape[-2] // len(parts)
        part_shape = (*shape[:-2], half, shape[-1])
        return [PlannedTensor(_gguf_name(arch, names, part), part_shape, partial(_rows, read, index, half))
                for index, part in enumerate(parts)]
    gguf_name = _gguf_name(arch, names, hf_name)
    return [PlannedTensor(gguf_name, shape, partial(_converted, arch, gguf_name, read))]


def _split_rule(arch: GgufArchitecture, hf_name: str) -> list[str] | None:
    """For a fused tensor llama.cpp keeps apart (e.g. experts' gate_up), the names of its row halves."""
    for fused, parts in (arch.entry.get("split") or {}).items():
        if hf_name.endswith(fused):
            prefix = hf_name[: -len(fused)]
            return [prefix + part for part in parts]
    return None


def _gguf_name(arch: GgufArchitecture, names, hf_name: str) -> str:
    gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if gguf_name is not None and not gguf_name.endswith((".weight", ".bias")):
        gguf_name += ".weight"  # a bare parameter (fused experts) is llama.cpp's weight
    if gguf_name is None:
        raise TunesmithError(
            f"GGUF export has no llama.cpp name for tensor {hf_name} of this {arch.config.model_type} model "
            "(an unknown layer would be silently dropped); export without export.gguf"
        )
    return gguf_name


def _rows(read, index: int, rows: int):
    return read()[..., index * rows:(index + 1) * rows, :]


def _converted(arch: GgufArchitecture, gguf_name: str, read):
    weight = read()
    if arch.entry.get("norm_offset") and gguf_name.endswith("norm.weight"):
        return weight + arch.entry["norm_offset"]  # Gemma's RMSNorm scales by (1 + weight); llama.cpp by weight
    return to_gguf_layout(arch, gguf_name, weight)


def to_gguf_layout(arch: GgufArchitecture, gguf_name: str, weight):
    """Rows of q / k reordered from Hugging Face's half-split rotary layout to llama.cpp's interleaved one."""
    if not arch.permute_qk or not gguf_name.endswith((".attn_q.weight", ".attn_k.weight")):
        return weight
    config = arch.config
    heads = config.num_attention_heads
    if ".attn_k." in gguf_name:
        heads = getattr(config, "num_key_value_heads", None) or heads
    rows_per_half = weight.shape[0] // heads // 2
    grouped = weight.reshape(heads, 2, rows_per_half, *weight.shape[1:])
    return grouped.swapaxes(1, 2).reshape(weight.shape)


def _check_vocab_rows(arch: GgufArchitecture, plan: list[PlannedTensor]) -> None:
    rows = next((tensor.shape[0] for tensor in plan if tensor.name == "token_embd.weight"), None)
    if rows is not None and rows != arch.config.vocab_size:
        raise TunesmithError(
            f"the model's config says vocab_size {arch.config.vocab_size} but its embedding has {rows} rows; "
            "fix vocab_size in config.json (resize_token_embeddings keeps them equal) before exporting to GGUF"
        )


class TensorSource:
    """The tensors of a (possibly sharded) safetensors folder, read one at a time as float32 numpy arrays."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self._files = {name: folder / file for name, file in weight_map.items()}
        else:
            from safetensors import safe_open

            with safe_open(folder / "model.safetensors", framework="pt") as handle:
                self._files = {name: folder / "model.safetensors" for name in handle.keys()}

    def names(self) -> list[str]:
        return list(self._files)

    def shape(self, name: str) -> tuple[int, ...]:
        from safetensors import safe_open

        with safe_open(self._files[name], framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def read(self, name: str):
        import torch
        from safetensors import safe_open

        with safe_open(self._files[name], framework="pt") as handle:
            return handle.get_tensor(name).to(torch.float32).numpy()
