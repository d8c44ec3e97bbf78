"""Tiny random models of each family the GGUF export supports, built from that architecture's config class
with its distinguishing features switched on (rope scaling, tied head, biases, experts, softcapping, sliding
windows, fused projections), paired with a real tokenizer of its kind from ../shared/assets."""

from __future__ import annotations

from pathlib import Path

from conftest import TOKENIZERS

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, initializer_range=0.1)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # scales most frequencies
GEMMA = dict(query_pre_attn_scalar=16, sliding_window=8, hidden_activation="gelu_pytorch_tanh")

# family -> (transformers config class, tokenizer under ../shared/assets/tokenizers, settings over SMALL)
FAMILIES = {
    "llama3_2": ("LlamaConfig", "llama3_1", dict(tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)),
    "qwen2": ("Qwen2Config", "qwen3", dict(tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", "qwen3", dict(tie_word_embeddings=False)),
    "qwen3_moe": ("Qwen3MoeConfig", "qwen3", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                                  norm_topk_prob=True, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", "llama2", dict(tie_word_embeddings=False, sliding_window=None)),
    "gemma2": ("Gemma2Config", "llama2", dict(GEMMA, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": ("Gemma3TextConfig", "llama2", dict(GEMMA, num_hidden_layers=6, rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    "phi3": ("Phi3Config", "llama2", dict(vocab_size=32064, tie_word_embeddings=False, pad_token_id=0)),
}


def build_family(name: str, folder: Path, seed: int = 0, **overrides) -> Path:
    """Save the tiny model of family `name` and its tokenizer into `folder`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config_class, tokenizer_name, settings = FAMILIES[name]
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / tokenizer_name)
    options = {**SMALL, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id, **settings, **overrides}
    config = getattr(transformers, config_class)(**options)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def template_name(tokenizer) -> str:
    """The tokenizer's own template when it has one; Llama 2's tokenizer has none, so a built-in."""
    return "auto" if getattr(tokenizer, "chat_template", None) else "llama2"
