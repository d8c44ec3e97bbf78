"""Write a GGUF file for llama.cpp / Ollama from an exported Hugging Face folder, through the `gguf` package.

Tensors are read one at a time from the safetensors shards, converted and streamed to the file, so memory
holds one tensor at a time, never the whole model twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.export.gguf_arch import add_hyperparameters, gguf_architecture, tensor_plan, to_gguf_layout
from tunesmith.export.gguf_vocab import add_vocab

# export.gguf kind -> (GGML tensor type for the matrices, llama.cpp file type)
KINDS = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
# Below 8 bits the embeddings and the output head lose the most; llama.cpp keeps them finer too.
SENSITIVE = ("token_embd.weight", "output.weight")


def write_gguf(hf_folder: Path, path: Path, kind: str, tokenizer, template_source: str, stop_ids: list[int],
               name: str, progress: bool = True) -> Path:
    import gguf
    from tqdm import tqdm
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_folder)
    arch = gguf_architecture(config)
    tensors = _TensorSource(hf_folder)
    plan = tensor_plan(arch, tensors.names())
    writer = gguf.GGUFWriter(path, arch.name)
    # transformers reads a llama-architecture GGUF back as Mistral only when the name says so
    writer.add_name(name if config.model_type != "mistral" or "mistral" in name.lower() else f"{name} mistral")
    writer.add_file_type(int(getattr(gguf.LlamaFileType, KINDS[kind][1])))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hyperparameters(writer, arch)
    add_vocab(writer, tokenizer, config.vocab_size, template_source, stop_ids)
    qtypes = {}
    for hf_name, gguf_name in plan.items():
        shape = tensors.shape(hf_name)
        qtypes[hf_name] = _tensor_type(kind, gguf_name, shape)
        stored_shape, dtype, nbytes = _stored_layout(shape, qtypes[hf_name])
        writer.add_tensor_info(gguf_name, stored_shape, dtype, nbytes, raw_dtype=qtypes[hf_name])
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for hf_name, gguf_name in tqdm(plan.items(), desc=f"GGUF {kind}", unit="tensor", disable=not progress):
        weight = to_gguf_layout(arch, gguf_name, tensors.read(hf_name))
        writer.write_tensor_data(_convert(weight, qtypes[hf_name]))
    writer.close()
    return path


def _tensor_type(kind: str, gguf_name: str, shape: tuple[int, ...]):
    """Norms and biases stay F32; matrices take the kind, or the finest that fits their row length."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) < 2:
        return GGMLQuantizationType.F32
    qtype = GGMLQuantizationType[KINDS[kind][0]]
    if kind.startswith(("q4", "q5")) and gguf_name in SENSITIVE:
        qtype = GGMLQuantizationType.Q8_0
    block_size = GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block_size:
        return GGMLQuantizationType.F16  # rows that do not fill whole blocks cannot be block-quantized
    return qtype


def _stored_layout(shape: tuple[int, ...], qtype):
    """(shape, numpy dtype, byte count) of the array written for a tensor of `shape` stored as `qtype`."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    if qtype == GGMLQuantizationType.F32:
        return shape, np.dtype(np.float32), int(np.prod(shape)) * 4
    if qtype == GGMLQuantizationType.F16:
        return shape, np.dtype(np.float16), int(np.prod(shape)) * 2
    byte_shape = quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def _convert(weight, qtype):
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if qtype == GGMLQuantizationType.F32:
        return np.ascontiguousarray(weight, dtype=np.float32)
    if qtype == GGMLQuantizationType.F16:
        return np.ascontiguousarray(weight, dtype=np.float16)
    return quantize(np.ascontiguousarray(weight, dtype=np.float32), qtype)


class _TensorSource:
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
