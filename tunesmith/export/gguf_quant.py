"""How each tensor of a GGUF file is stored for an export.gguf kind: llama.cpp's per-tensor choices
(gguf_tables.yaml `quant_kinds`), the fallback for rows that do not fill whole blocks, and the encoding."""

from __future__ import annotations

import re

from tunesmith.errors import TunesmithError
from tunesmith.export.gguf_vocab import gguf_tables

K_TYPES = ("Q3_K", "Q4_K", "Q5_K", "Q6_K")  # encoded by gguf_kquants; the gguf package encodes the others


def quant_kind(kind: str) -> dict:
    kinds = gguf_tables()["quant_kinds"]
    if kind not in kinds:
        raise TunesmithError(f"GGUF kind '{kind}' is not one we can write (supported: {', '.join(kinds)})")
    return kinds[kind]


def file_type(kind: str) -> int:
    import gguf

    return int(getattr(gguf.LlamaFileType, quant_kind(kind)["file_type"]))


def tensor_type(kind: str, name: str, shape: tuple[int, ...], layers: int, has_output: bool):
    """The GGML type of tensor `name`, as llama.cpp's llama_tensor_get_type picks it for this kind."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    tables = gguf_tables()
    if len(shape) < 2 or any(part in name for part in tables["never_quantized"]):
        return GGMLQuantizationType.F32
    spec = quant_kind(kind)
    type_name = spec["type"]
    if name == "output.weight" or (name == "token_embd.weight" and not has_output):
        type_name = spec.get("output", type_name)  # a tied embedding is also the output head
    elif name == "token_embd.weight":
        type_name = spec.get("token_embd", type_name)
    else:
        type_name = _rule_type(spec.get("rules") or {}, name, layers) or type_name
    while shape[-1] % GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]:
        type_name = tables["fallbacks"][type_name]  # rows that do not fill whole blocks take a coarser block
    return GGMLQuantizationType[type_name]


def _rule_type(rules: dict, name: str, layers: int) -> str | None:
    match = re.match(r"blk\.(\d+)\.(\w+?)(_exps)?\.weight$", name)
    if not match or match.group(2) not in rules:
        return None
    layer = int(match.group(1))
    for condition, type_name in rules[match.group(2)].items():
        if _holds(condition, layer, layers):
            return type_name
    return None


def _holds(condition: str, layer: int, layers: int) -> bool:
    if condition == "all":
        return True
    if condition == "more_bits":  # llama.cpp's use_more_bits: first and last eighth, and every third between
        return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2
    if condition.startswith("below_"):
        return layer < int(condition.removeprefix("below_"))
    if condition.startswith("first_1/"):
        return layer < layers // int(condition.removeprefix("first_1/"))
    raise TunesmithError(f"gguf_tables.yaml names an unknown layer condition '{condition}'")


def stored_layout(shape: tuple[int, ...], qtype):
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


def encode(weight, qtype):
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    from tunesmith.export.gguf_kquants import quantize_k

    if qtype == GGMLQuantizationType.F32:
        return np.ascontiguousarray(weight, dtype=np.float32)
    if qtype == GGMLQuantizationType.F16:
        return np.ascontiguousarray(weight, dtype=np.float16)
    if qtype.name in K_TYPES:
        return quantize_k(weight, qtype.name)
    return quantize(np.ascontiguousarray(weight, dtype=np.float32), qtype)
