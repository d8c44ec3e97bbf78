"""Rotary position embeddings as llama.cpp reads them: base frequency, scaling, and Llama 3's `rope_freqs`.

transformers keeps the rope settings in `rope_parameters`: one dict, or (Gemma 3) one per layer type.
llama.cpp knows a few scaling types; any other (yarn, longrope, dynamic, ...) is refused by name, since
writing the plain frequencies would give a file that loads and answers wrong past the short context.
"""

from __future__ import annotations

import math

from tunesmith.errors import TunesmithError

ROPE_FREQS = "rope_freqs.weight"


def rope_parameters(config) -> tuple[dict, dict | None]:
    """(settings of the full-attention layers, settings of the sliding-window layers or None)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if "full_attention" in params:
        return params["full_attention"], params.get("sliding_attention")
    return params, None


def check_rope(arch) -> None:
    full, sliding = rope_parameters(arch.config)
    supported = arch.entry.get("rope", ["default"])
    rope_type = full.get("rope_type", "default")
    if rope_type not in supported:
        raise TunesmithError(
            f"GGUF export of {arch.config.model_type} does not support rope scaling '{rope_type}' "
            f"(supported: {', '.join(supported)}); export without export.gguf"
        )
    swa_theta = arch.entry.get("swa_rope_theta")
    if sliding is not None and swa_theta is not None:
        if sliding.get("rope_type", "default") != "default" or _theta(sliding, arch.config) != swa_theta:
            raise TunesmithError(
                f"GGUF export of {arch.config.model_type} needs plain rope with base {swa_theta} on the "
                f"sliding-window layers (llama.cpp fixes it), this model has {sliding}; export without export.gguf"
            )


def add_rope(writer, arch) -> None:
    full, _ = rope_parameters(arch.config)
    writer.add_rope_freq_base(_theta(full, arch.config))
    writer.add_rope_dimension_count(int(arch.head_dim * full.get("partial_rotary_factor", 1.0)))
    if full.get("rope_type") == "linear":
        from gguf import RopeScalingType

        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(full["factor"]))


def needs_rope_freqs(arch) -> bool:
    return rope_parameters(arch.config)[0].get("rope_type") == "llama3"


def llama3_rope_factors(arch):
    """Per frequency pair, the divisor Llama 3.1's rope scaling applies: 1 for short wavelengths, `factor`
    for long ones and a smooth blend between (llama.cpp multiplies each wavelength by it)."""
    import numpy as np

    params, _ = rope_parameters(arch.config)
    dim = int(arch.head_dim * params.get("partial_rotary_factor", 1.0))
    freqs = 1.0 / (_theta(params, arch.config) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelengths = 2 * math.pi / freqs
    factor, old_context = params["factor"], params["original_max_position_embeddings"]
    low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    smooth = (old_context / wavelengths - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelengths < old_context / high, 1.0,
                       np.where(wavelengths > old_context / low, factor, blended))
    return factors.astype(np.float32)


def _theta(params: dict, config) -> float:
    return float(params.get("rope_theta") or getattr(config, "rope_theta", 10000.0))
