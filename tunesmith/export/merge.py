"""The trained network of a run as one plain transformers model: adapters merged into the base weights.

Merging happens in float32 on the CPU, so the only rounding is the final cast to the export dtype.
A QLoRA adapter was trained against the 4-bit quantized base, so that base is rebuilt the same way and
dequantized before the adapter is merged into it.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.config.schema import RunConfig
from tunesmith.errors import TunesmithError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def merged_model(run_dir: Path, config: RunConfig, progress: bool = True):
    """The run's trained model in float32, with any adapter merged in (a full or freeze run loads as is)."""
    from tunesmith.model.load import load_model
    from tunesmith.run_folder import has_weights, is_adapter

    fp32 = {"dtype": "float32"}
    if not is_adapter(run_dir):
        if not has_weights(run_dir):
            raise TunesmithError(f"{run_dir} holds no trained weights (no adapter, no whole model); did the run finish?")
        return load_model(config.model.model_copy(update={"path": str(run_dir), "gguf_file": None, **fp32}))
    if config.method.kind == "qlora":
        base = _dequantized_base(config)
    else:
        base = load_model(config.model.model_copy(update=fp32))
    from peft import PeftModel

    from tunesmith.model.peft_warnings import quiet_peft

    with quiet_peft():
        with_adapter = PeftModel.from_pretrained(base, str(run_dir))
    return with_adapter.merge_and_unload(progressbar=progress)


def _dequantized_base(config: RunConfig):
    """The base quantized exactly as the QLoRA run loaded it, then dequantized: the weights the adapter saw."""
    import torch

    from tunesmith.model.load import load_model

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    quantized = load_model(config.model.model_copy(update={"dtype": "float32"}), device_type)
    return quantized.dequantize().to("cpu", torch.float32)


def export_dtype(name: str, base_location: str):
    """The torch dtype to save in: the one asked for, or for 'auto' the one the base model was saved in."""
    import torch

    if name != "auto":
        return getattr(torch, DTYPES[name])
    from transformers import AutoConfig

    saved = getattr(AutoConfig.from_pretrained(base_location), "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    return saved if saved in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
