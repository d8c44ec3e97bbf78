"""Scaled dot-product attention for CPU training that keeps grouped keys and values as they are.

transformers' sdpa repeats every key and value head for its group of query heads (`repeat_kv`) whenever a mask is
given, which packed rows always give: the kernel then keeps those repeated copies for its backward pass.
PyTorch's CPU flash kernel takes the groups itself (`enable_gqa`), mask and all, and keeps the heads as they
came: SmolLM2-135M (9 query heads over 3 key/value heads), 2,048 packed tokens: 0.19 GB less kept, and
forward + backward of one layer's attention 73 -> 59 ms. The output is bit for bit transformers'; the key and
value gradients are summed over each group inside the kernel instead of by the repeat's backward, an order of
float32 rounding apart (~1e-7 relative).

It runs under its own name in transformers' attention registry (their extension point: no model but the one it
is set on changes) with sdpa's masks; anything but CPU training on plain sdpa goes to transformers' own function.
"""

from __future__ import annotations

import torch

NAME = "tunesmith_cpu_sdpa"


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (query.device.type != "cpu" or query.shape[2] == 1 or kwargs.get("position_bias") is not None
            or kwargs.get("softcap") is not None or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = attention_mask is None and is_causal  # as transformers decides it for more than one query
    if is_causal and key.shape[2] > query.shape[2]:  # keys past the queries are masked anyway (empty cache prefill)
        key, value = key[:, :, :query.shape[2]], value[:, :, :query.shape[2]]
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1])
    return output.transpose(1, 2).contiguous(), None


def use_cpu_attention(model) -> bool:
    """Set `model` (a text decoder on plain sdpa) to run its attention here; whether it was."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.config._attn_implementation != "sdpa" or getattr(model.config, "sub_configs", None):
        return False  # other kinds keep theirs; vision-language models' towers call attention their own ways
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
