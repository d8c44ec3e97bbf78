"""What a GGUF file says about the network: llama.cpp's architecture, hyperparameters and tensor names."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.export.gguf_vocab import gguf_tables


@dataclass(frozen=True)
class GgufArchitecture:
    name: str  # llama.cpp's architecture name, e.g. "llama"
    permute_qk: bool
    config: object  # the transformers PretrainedConfig

    @property
    def head_dim(self) -> int:
        config = self.config
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def gguf_architecture(config) -> GgufArchitecture:
    """The GGUF architecture for a transformers config, or a clear error when export does not support it."""
    known = gguf_tables()["architectures"]
    entry = known.get(config.model_type)
    if entry is None:
        raise TunesmithError(
            f"GGUF export does not support model_type '{config.model_type}' yet (supported: {', '.join(known)}); "
            "export without export.gguf and convert with llama.cpp's convert_hf_to_gguf.py"
        )
    rope_type = (_rope_parameters(config) or {}).get("rope_type", "default")
    if rope_type != "default":
        raise TunesmithError(
            f"GGUF export does not support rope scaling '{rope_type}' yet; export without export.gguf"
        )
    return GgufArchitecture(entry["gguf"], entry["permute_qk"], config)


def add_hyperparameters(writer, arch: GgufArchitecture) -> None:
    config = arch.config
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(arch.head_dim)
    writer.add_key_length(arch.head_dim)
    writer.add_value_length(arch.head_dim)
    writer.add_vocab_size(config.vocab_size)


def tensor_plan(arch: GgufArchitecture, hf_names: list[str]) -> dict[str, str]:
    """GGUF name for each Hugging Face tensor that goes into the file, in file order."""
    import gguf

    arch_id = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch.name)
    names = gguf.get_tensor_name_map(arch_id, arch.config.num_hidden_layers)
    plan = {}
    for hf_name in hf_names:
        if hf_name == "lm_head.weight" and arch.config.tie_word_embeddings:
            continue  # a GGUF without output.weight reuses token_embd, as the tied model does
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TunesmithError(
                f"GGUF export has no llama.cpp name for tensor {hf_name} of this {arch.config.model_type} model; "
                "export without export.gguf"
            )
        plan[hf_name] = gguf_name
    return plan


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


def _rope_parameters(config) -> dict | None:
    return getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)


def _rope_theta(config) -> float:
    parameters = _rope_parameters(config) or {}
    return float(parameters.get("rope_theta") or getattr(config, "rope_theta", 10000.0))
