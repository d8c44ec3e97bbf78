"""What a GGUF file says about the network: llama.cpp's architecture, hyperparameters and tensor names.

Each supported model_type is a row of gguf_tables.yaml (`architectures`); this module reads the row and
refuses, before any work, a model that has something the row does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.export.gguf_rope import add_rope, check_rope
from tunesmith.export.gguf_vocab import gguf_tables


@dataclass(frozen=True)
class GgufArchitecture:
    name: str  # llama.cpp's architecture name, e.g. "llama"
    entry: dict  # the architecture's row of gguf_tables.yaml
    config: object  # the transformers PretrainedConfig

    @property
    def head_dim(self) -> int:
        config = self.config
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    @property
    def permute_qk(self) -> bool:
        return bool(self.entry.get("permute_qk"))


def gguf_architecture(config) -> GgufArchitecture:
    """The GGUF architecture for a transformers config, or a clear error when export does not support it."""
    known = gguf_tables()["architectures"]
    entry = known.get(config.model_type)
    if entry is None:
        raise TunesmithError(
            f"GGUF export does not support model_type '{config.model_type}' (supported: {', '.join(known)}); "
            "export without export.gguf and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    arch = GgufArchitecture(entry["gguf"], entry, config)
    _check_requirements(arch)
    _check_layer_pattern(arch)
    check_rope(arch)
    return arch


def _check_requirements(arch: GgufArchitecture) -> None:
    """Settings llama.cpp's graph for this architecture hard-codes: any other value would be computed wrong."""
    config = arch.config
    for field, wanted in (arch.entry.get("requires") or {}).items():
        value = getattr(config, field, wanted)
        if (list(value) if isinstance(value, (list, tuple)) else value) != wanted:
            raise TunesmithError(
                f"GGUF export of {config.model_type} needs {field}={wanted!r} (llama.cpp computes it that way), "
                f"this model has {value!r}; export without export.gguf"
            )
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if "query_pre_attn_scalar" in arch.entry.get("checks", []) and scalar not in _query_scales(arch):
        raise TunesmithError(
            f"GGUF export of {config.model_type} needs query_pre_attn_scalar equal to head_dim {arch.head_dim} "
            f"(llama.cpp scales queries by it), this model has {scalar}; export without export.gguf"
        )


def _query_scales(arch: GgufArchitecture) -> set[int]:
    config = arch.config
    scales = {arch.head_dim}
    if config.num_hidden_layers in (46, 62):  # llama.cpp's 27B Gemma graphs scale by hidden / heads instead
        scales.add(config.hidden_size // config.num_attention_heads)
    return scales


def _check_layer_pattern(arch: GgufArchitecture) -> None:
    """llama.cpp fixes which layers use the sliding window (every `sliding_pattern`-th layer does not)."""
    pattern = arch.entry.get("sliding_pattern")
    if not pattern:
        return
    config = arch.config
    expected = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                for i in range(config.num_hidden_layers)]
    if list(getattr(config, "layer_types", expected)) != expected:
        raise TunesmithError(
            f"GGUF export of {config.model_type} needs a sliding-window layer pattern of {pattern} (llama.cpp "
            f"fixes it), this model has layer_types {config.layer_types}; export without export.gguf"
        )


def add_hyperparameters(writer, arch: GgufArchitecture) -> None:
    config = arch.config
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(arch.head_dim)
    writer.add_value_length(arch.head_dim)
    writer.add_vocab_size(config.vocab_size)
    add_rope(writer, arch)
    for key, field in (arch.entry.get("keys") or {}).items():
        value = getattr(config, field, None)
        if isinstance(value, bool) or value is None:
            continue  # an absent feature (e.g. no softcapping) is an absent key
        add = writer.add_float32 if isinstance(value, float) else writer.add_uint32
        add(f"{arch.name}.{key}", value)
