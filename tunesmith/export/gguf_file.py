"""Write a GGUF file for llama.cpp / Ollama from an exported Hugging Face folder, through the `gguf` package.

Tensors are read one at a time from the safetensors shards, converted and streamed to the file, so memory
holds one tensor at a time, never the whole model twice.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.export.gguf_arch import add_hyperparameters, gguf_architecture
from tunesmith.export.gguf_quant import encode, file_type, stored_layout, tensor_type
from tunesmith.export.gguf_tensors import TensorSource, tensor_plan
from tunesmith.export.gguf_vocab import add_vocab, check_vocab


def write_gguf(hf_folder: Path, path: Path, kind: str, tokenizer, template_source: str, stop_ids: list[int],
               name: str, progress: bool = True) -> Path:
    import gguf
    from tqdm import tqdm
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_folder)
    arch = gguf_architecture(config)
    vocab_spec = check_vocab(tokenizer, config.vocab_size)
    plan = tensor_plan(arch, TensorSource(hf_folder))
    has_output = any(tensor.name == "output.weight" for tensor in plan)
    qtypes = [tensor_type(kind, tensor.name, tensor.shape, config.num_hidden_layers, has_output) for tensor in plan]
    writer = gguf.GGUFWriter(path, arch.name)
    # transformers reads a llama-architecture GGUF back as Mistral only when the name says so
    writer.add_name(name if config.model_type != "mistral" or "mistral" in name.lower() else f"{name} mistral")
    writer.add_file_type(file_type(kind))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hyperparameters(writer, arch)
    add_vocab(writer, tokenizer, vocab_spec, config.vocab_size, template_source, stop_ids)
    for tensor, qtype in zip(plan, qtypes):
        stored_shape, dtype, nbytes = stored_layout(tensor.shape, qtype)
        writer.add_tensor_info(tensor.name, stored_shape, dtype, nbytes, raw_dtype=qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor, qtype in tqdm(list(zip(plan, qtypes)), desc=f"GGUF {kind}", unit="tensor", disable=not progress):
        writer.write_tensor_data(encode(tensor.read(), qtype))
    writer.close()
    return path
