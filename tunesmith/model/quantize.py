"""Quantized base weights for QLoRA (bitsandbytes): how to load them and how many bytes they take.

bitsandbytes quantizes every linear layer of the decoder; the output head stays in the load dtype (it is
what transformers leaves out, and what peft never adapts). 4-bit weights are stored two to a byte in blocks
of 64 with one scale per block; double quantization stores those scales in 8 bits with one float32 scale
per 256 of them. 8-bit weights are one byte each with one float32 scale per output row (LLM.int8).
"""

from __future__ import annotations

from tunesmith.config.schema import ModelConfig
from tunesmith.errors import TunesmithError

BLOCK_4BIT = 64  # weights per absmax scale (bitsandbytes' default blocksize for 4-bit)
BLOCK_NESTED = 256  # 8-bit scales per float32 scale under double quantization
INSTALL_HINT = "install it with: pip install 'tunesmith[qlora]'"


def quantization_kwargs(config: ModelConfig, compute_dtype, device_type: str) -> dict:
    """Extra `from_pretrained` arguments that load the base quantized; {} when model.quantization_bit is null."""
    if config.quantization_bit is None:
        return {}
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if config.quantization_bit == 4:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=config.quantization_type,
            bnb_4bit_use_double_quant=config.double_quantization,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    kwargs = {"quantization_config": quantization}
    if device_type == "cuda":
        import torch

        # Quantization happens as weights are placed; each process places its copy on its own GPU.
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    return kwargs


def keep_4bit_matmuls_in_compute_dtype(model) -> None:
    """Turn off bitsandbytes' AVX512-BF16 CPU path for every 4-bit layer of `model`.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight the first time the layer runs without
    gradients (evaluation, generation, a reference pass) and from then on multiplies in bfloat16. That makes a
    no-grad loss differ from the training loss of the same weights, the same run's numbers differ from one
    machine to the next, and it fails outright on a layer narrower than one quantization block. Without it the
    weights are dequantized to the compute dtype (float32 on CPU) for every matmul, as on any other CPU.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def require_bitsandbytes() -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise TunesmithError(f"model.quantization_bit needs the bitsandbytes package; {INSTALL_HINT}")


def quantized_weight_bytes(shape: tuple[int, int], bits: int, double_quantization: bool) -> float:
    """Bytes bitsandbytes keeps for one quantized [out, in] linear weight, scales included."""
    out_features, in_features = shape
    numel = out_features * in_features
    if bits == 8:
        return numel + 4 * out_features
    blocks = numel / BLOCK_4BIT
    scales = blocks + 4 * blocks / BLOCK_NESTED if double_quantization else 4 * blocks
    return numel / 2 + scales


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))
