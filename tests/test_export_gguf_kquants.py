"""K-quant GGUF files: our encoders judged by the gguf package's decoders on llama.cpp's own test data and
thresholds, llama.cpp's per-tensor mixes, and whole files read back by transformers and by llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_families import build_family
from llama_cpp_judge import judge, node_modules
from test_export_gguf_llama_cpp import compared_prefix, greedy_with_margins, write_gguf_for

# llama.cpp tests/test-quantize-fns.cpp: 32 * 128 values of 0.1 + 2 cos(i + offset), and the largest total
# error it accepts (its array_rmse: sqrt of the summed squared error, divided by the count): 0.002, and
# 0.004 for Q3_K (MAX_QUANTIZATION_TOTAL_ERROR_3BITS).
TEST_SIZE = 32 * 128
PROBES = ("Hello there", "1, 2, 3,", "The weather today", "Once upon a time", "def main():", "Paris is")
MAX_TOTAL_ERROR = {"Q3_K": 0.004, "Q4_K": 0.002, "Q5_K": 0.002, "Q6_K": 0.002}
# Fractions of a tensor's spread that a round trip may miss by: about one step of each format's grid.
RELATIVE_BOUND = {"Q3_K": 0.2, "Q4_K": 0.1, "Q5_K": 0.05, "Q6_K": 0.025}


def synthetic(offset: float) -> np.ndarray:
    return (0.1 + 2 * np.cos(np.arange(TEST_SIZE, dtype=np.float64) + offset)).astype(np.float32)


def total_error(original: np.ndarray, decoded: np.ndarray) -> float:
    difference = (original.astype(np.float64) - decoded.astype(np.float64)).ravel()
    return float(np.sqrt((difference * difference).sum()) / difference.size)


@pytest.mark.parametrize("type_name", list(MAX_TOTAL_ERROR))
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_encoder_meets_llama_cpp_error_threshold(type_name, offset):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from tunesmith.export.gguf_kquants import quantize_k

    data = synthetic(offset)[None]
    packed = quantize_k(data, type_name)
    decoded = dequantize(packed, GGMLQuantizationType[type_name])
    assert decoded.shape == data.shape
    assert total_error(data, decoded) < MAX_TOTAL_ERROR[type_name]


@pytest.mark.parametrize("type_name", list(RELATIVE_BOUND))
def test_encoder_round_trip_on_weight_like_rows(type_name):
    """Gaussian rows with outliers and an all-zero block: every value within the format's step, zeros kept."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from tunesmith.export.gguf_kquants import quantize_k

    rows = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32) * 0.02
    rows[1, 7] = 0.5  # an outlier stretches its sub-block's scale, not its neighbours'
    rows[2, :256] = 0.0
    decoded = dequantize(quantize_k(rows, type_name), GGMLQuantizationType[type_name])
    spread = rows.max() - rows.min()
    assert np.abs(decoded - rows).max() < RELATIVE_BOUND[type_name] * spread
    assert not decoded[2, :256].any()
    rms = np.sqrt(np.mean((decoded - rows) ** 2)) / rows.std()
    assert rms < RELATIVE_BOUND[type_name]


def test_mixes_follow_llama_cpp_per_tensor_choices():
    from tunesmith.export.gguf_quant import tensor_type

    layers = 16  # use_more_bits: layers 0, 1, 14, 15 and every third from 2 (4, 7, 10, 13)
    more_bits = {0, 1, 4, 7, 10, 13, 14, 15}

    def kind_of(kind, name, shape=(256, 256), has_output=True):
        return tensor_type(kind, name, shape, layers, has_output).name

    for layer in range(layers):
        expected = "Q6_K" if layer in more_bits else "Q4_K"
        assert kind_of("q4_k_m", f"blk.{layer}.attn_v.weight") == expected
        assert kind_of("q4_k_m", f"blk.{layer}.ffn_down.weight") == expected
        assert kind_of("q5_k_m", f"blk.{layer}.ffn_down_exps.weight", (4, 256, 256)) in {"Q5_K", "Q6_K"}
        assert kind_of("q4_k_s", f"blk.{layer}.ffn_down.weight") == ("Q5_K" if layer < 2 else "Q4_K")
        assert kind_of("q3_k_m", f"blk.{layer}.attn_v.weight") == ("Q5_K" if layer < 2 else "Q4_K")
        assert kind_of("q3_k_m", f"blk.{layer}.ffn_down.weight") == ("Q5_K" if layer < 1 else "Q4_K")
        assert kind_of("q3_k_m", f"blk.{layer}.attn_output.weight") == "Q4_K"
        assert kind_of("q3_k_m", f"blk.{layer}.ffn_up.weight") == "Q3_K"
    assert kind_of("q4_k_m", "blk.3.attn_q.weight") == "Q4_K"
    assert kind_of("q4_k_m", "blk.3.attn_qkv.weight") == "Q5_K"
    assert kind_of("q4_k_m", "output.weight") == "Q6_K"
    assert kind_of("q4_k_m", "token_embd.weight") == "Q4_K"
    assert kind_of("q4_k_m", "token_embd.weight", has_output=False) == "Q6_K"  # tied: it is the head
    assert kind_of("q4_k_m", "blk.0.ffn_gate_inp.weight", (4, 256)) == "F32"  # the router stays exact
    assert kind_of("q4_k_m", "blk.0.attn_norm.weight", (256,)) == "F32"
    assert kind_of("q4_k_m", "blk.3.attn_q.weight", (64, 96)) == "Q5_0"  # rows of 96: llama.cpp's fallback
    assert kind_of("q6_k", "blk.3.attn_q.weight", (64, 96)) == "Q8_0"
    assert kind_of("q6_k", "blk.3.attn_q.weight", (64, 40)) == "F16"
    assert kind_of("q3_k_m", "blk.3.attn_q.weight", (64, 96)) == "Q4_0"  # llama.cpp's IQ4_NL, in a block we write
    assert kind_of("q3_k_m", "token_embd.weight") == "Q3_K"
    assert kind_of("q3_k_m", "output.weight") == "Q6_K"


@pytest.fixture(scope="module")
def k_model(tmp_path_factory):
    """A tiny Mistral (llama graph, 32k vocabulary) whose rows are whole K blocks: no fallback types."""
    folder = tmp_path_factory.mktemp("k-mistral")
    return build_family("mistral", folder, seed=1, hidden_size=256, intermediate_size=512, head_dim=64,
                        initializer_range=0.05)


# each kind's file, written once for the module, and the type its attention matrices get
MATRIX_TYPE = {"q4_0": "Q4_0", "q3_k_m": "Q3_K", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}


@pytest.fixture(scope="module")
def k_files(k_model, tmp_path_factory):
    from transformers import AutoTokenizer

    folder, tokenizer = tmp_path_factory.mktemp("k-gguf"), AutoTokenizer.from_pretrained(k_model)
    return {kind: write_gguf_for(k_model, kind, folder / kind, tokenizer) for kind in MATRIX_TYPE}


@pytest.fixture(scope="module")
def decoded(k_files):
    """Each file as transformers reads it: every tensor dequantized by the gguf package's decoders."""
    from transformers import AutoModelForCausalLM

    return {kind: AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
            for kind, gguf in k_files.items()}


def test_k_quant_files_read_back_closer_than_legacy_quants(k_model, k_files, decoded):
    """q4_k_m must beat q4_0 (the gguf package's own 4-bit encoder, with embeddings and head at q8_0), and
    each finer kind must come closer to the float model than the one below it."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = torch.tensor([AutoTokenizer.from_pretrained(k_model)("The capital of France is Paris.")["input_ids"]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(k_model, dtype=torch.float32)(ids).logits
    error = {}
    for kind, gguf in k_files.items():
        types = {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(gguf).tensors}
        assert types["blk.0.attn_q.weight"] == MATRIX_TYPE[kind]
        with torch.no_grad():
            got = decoded[kind](ids).logits
        error[kind] = ((got - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt()).item()
    print("relative rms logit error:", {kind: round(value, 4) for kind, value in error.items()})
    assert error["q6_k"] < error["q5_k_m"] < error["q4_k_m"] < error["q3_k_m"]
    assert error["q4_k_m"] < error["q4_0"]
    assert error["q6_k"] < 0.1


@pytest.mark.parametrize("kind", ["q3_k_m", "q4_k_m"])
def test_llama_cpp_runs_a_k_quant_file_as_gguf_decodes_it(k_model, k_files, decoded, kind):
    """llama.cpp loads our file and its greedy tokens equal those of the same file dequantized by gguf
    wherever the top-1 is clear (llama.cpp rounds activations to 8 bits, so a looser margin)."""
    from transformers import AutoTokenizer

    prompts = [AutoTokenizer.from_pretrained(k_model)(text)["input_ids"] for text in PROBES]
    answer = judge(node_modules(), k_files[kind], [], prompts, 4)
    compared = 0
    for prompt, got in zip(prompts, answer["continuations"]):
        expected, margins = greedy_with_margins(decoded[kind], prompt, 4)
        compared += compared_prefix(expected, margins, got, margin=0.05)
    assert compared >= 2
