"""`tunesmith estimate`: parameter counts and the memory formula, by hand and against tensors measured on CPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml

from saved_tensors import held_for_backward_bytes
from tunesmith.config import validate_config
from tunesmith.model.estimate import estimate_memory

SHAPE = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=False)


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPE)


@pytest.fixture
def config_only_dir(tmp_path):
    """A model folder with config.json and no weights: the estimate must not need them."""
    llama_config().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def run_config(model_dir, method: dict, dtype="bfloat16", precision="bf16", **train) -> dict:
    return {"model": {"path": str(model_dir), "dtype": dtype}, "method": method,
            "data": {"datasets": ["unused"], "max_length": 32},
            "train": {"batch_size": 2, "precision": precision, **train}}


def test_lora_bf16_estimate_matches_the_hand_computed_numbers(config_only_dir):
    estimate = estimate_memory(validate_config(run_config(config_only_dir, {"kind": "lora", "rank": 8})))

    h, i, kv, vocab, tokens = 64, 128, 32, 1000, 2 * 32
    base = 2 * vocab * h + 2 * (h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h) + h
    lora = 2 * 8 * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))  # r * (in + out), 7 modules, 2 layers
    assert (estimate.params.trainable, estimate.params.total) == (lora, base + lora)
    assert estimate.weights == 2 * base + 4 * lora  # bf16 base, float32 adapter (master weights)
    assert estimate.gradients == 4 * lora
    assert estimate.optimizer == 2 * 4 * lora  # AdamW: exp_avg and exp_avg_sq
    # bytes per token: E = R = 2, float32 adapter (so each LoRA module copies its input)
    norm_with_grad_input = 4 * h + 4
    attention = 2 * (2 * h + 2 * kv) + 4 * 4
    mlp = 2 * 2 * i  # gate and up; act(gate) is recomputed in backward (model/gated_mlp.py)
    # The frozen linears keep no input; each LoRA module keeps its own copy (cast to its float32 weights, then
    # autocast's bf16 copy): E r each, plus E in for the copy.
    lora_modules = 7 * 2 * 8 + 2 * (6 * h + i)
    layer0 = norm_with_grad_input + attention + mlp + lora_modules  # input_layernorm: no grad input
    layer1 = layer0 + norm_with_grad_input
    # sdpa on a padded batch, per layer: the additive [B, 1, L, L] mask and K, V repeated from 2 to 4 heads
    sdpa = 2 * (2 * 32 * 32 * 2 + 2 * tokens * (h - kv) * 2)
    copies = 2 * lora  # autocast's bf16 copy of each float32 adapter weight (all of them are linear)
    assert estimate.activations == tokens * (layer0 + layer1 + norm_with_grad_input) + sdpa + copies
    assert estimate.logits == 12 * tokens * vocab
    assert estimate.peak == estimate.weights + estimate.optimizer + estimate.activations + estimate.logits


def test_the_output_head_counts_one_chunk_of_logits_at_most(config_only_dir):
    """train/token_logps.py runs the head on at most LOGIT_ELEMENTS logits at a time, whatever the batch."""
    from tunesmith.train.token_logps import LOGIT_ELEMENTS

    vocab = 1000
    small = estimate_memory(validate_config(run_config(config_only_dir, {"kind": "lora"})))  # 64 tokens
    large = estimate_memory(validate_config(run_config(config_only_dir, {"kind": "lora"}, batch_size=512)))
    assert small.logits == 12 * 64 * vocab
    assert large.logits == 12 * (LOGIT_ELEMENTS // vocab) * vocab < 12 * 512 * 32 * vocab


def test_sharded_norms_and_compiled_layers_keep_what_model_recompute_rebuilds_elsewhere(config_only_dir):
    """fp32 LoRA, 2 layers: ZeRO-3's sharded norms keep their outputs (both norms' of layer 1, the second of
    layer 0: layer 0's first norm reads the frozen embeddings and keeps its input in place of the output either
    way); compiled layers run no hook, so each gated MLP also keeps act(gate) * up."""
    h, i, layers, tokens = 64, 128, 2, 2 * 32
    fp32 = {"dtype": "float32", "precision": "fp32"}

    def activations(dist: dict | None = None, **train) -> float:
        config = run_config(config_only_dir, {"kind": "lora", "rank": 8}, **fp32, **train)
        return estimate_memory(validate_config(config | ({"dist": dist} if dist else {}))).activations

    default = activations()
    zero3 = activations(dist={"engine": "deepspeed", "deepspeed": {"stage": 3}})
    compiled = activations(compile=True)
    assert zero3 - default == tokens * (2 * layers - 1) * h * 4
    assert compiled - default == tokens * ((2 * layers - 1) * h + layers * i) * 4


def test_accumulation_and_checkpointing_change_the_peak_as_documented(config_only_dir):
    full = {"kind": "full"}
    single = estimate_memory(validate_config(run_config(config_only_dir, full)))
    accum = estimate_memory(validate_config(run_config(config_only_dir, full, grad_accum=4)))
    # In fp32, so that autocast's weight copies (kept either way) do not hide what checkpointing saves.
    fp32 = {"dtype": "float32", "precision": "fp32"}
    no_ckpt = estimate_memory(validate_config(run_config(config_only_dir, full, **fp32)))
    ckpt = estimate_memory(validate_config(run_config(config_only_dir, full, **fp32, gradient_checkpointing=True)))

    assert single.peak == single.weights + single.optimizer + max(single.activations + single.logits, single.gradients)
    assert accum.peak == accum.weights + accum.optimizer + accum.gradients + accum.activations + accum.logits
    # Two layers: checkpointing keeps both layers' inputs and one layer's activations with nothing rebuilt (the
    # recomputation runs under checkpointing's own saved-tensor hook), against two layers with rebuilds: less,
    # though not by much on two layers.
    assert ckpt.activations < no_ckpt.activations


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_4bit_weights_match_what_bitsandbytes_stores(tmp_path):
    from transformers import LlamaForCausalLM

    from tunesmith.config.method_kinds import parse_method
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method

    LlamaForCausalLM(llama_config()).save_pretrained(tmp_path / "model", safe_serialization=True)
    model = load_model(ModelConfig(path=str(tmp_path / "model"), dtype="float32", quantization_bit=4))
    model = apply_method(model, parse_method(dict(kind="qlora")))  # the estimate counts the adapter too
    measured = 0
    for param in model.parameters():
        measured += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        if state is not None:
            measured += state.absmax.nbytes + (state.state2.absmax.nbytes if state.nested else 0)

    config = run_config(tmp_path / "model", {"kind": "qlora"}, dtype="float32", precision="fp32")
    config["model"]["quantization_bit"] = 4
    assert estimate_memory(validate_config(config)).weights == pytest.approx(measured, rel=0.005)


def saved_activation_bytes(model, ids: torch.Tensor, mask: torch.Tensor, autocast) -> int:
    """Bytes autograd holds for backward from the decoder and the output head, under the plan's autocast."""

    def forward():
        with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            return model.get_output_embeddings()(hidden)

    return held_for_backward_bytes(model, forward)


@pytest.mark.parametrize("method, dtype", [
    ({"kind": "full"}, "float32"),
    ({"kind": "full"}, "bfloat16"),
    ({"kind": "lora", "rank": 8}, "float32"),
    ({"kind": "lora", "rank": 8}, "bfloat16"),
    ({"kind": "lora", "rank": 8, "targets": ["q_proj", "v_proj"], "dropout": 0.1}, "float32"),
    ({"kind": "lora", "rank": 8, "dora": True}, "float32"),
    ({"kind": "lora", "rank": 8, "dora": True, "dropout": 0.1}, "float32"),  # DoRA computes the base output anew
    ({"kind": "freeze", "layers": 1}, "float32"),
])
def test_estimate_matches_tensors_measured_on_cpu(tmp_path, method, dtype):
    """Weights, gradients and AdamW states exactly; saved activations (a padded batch, under the plan's
    autocast) within 5%. The model is prepared as training prepares it."""
    from transformers import LlamaForCausalLM

    from tunesmith.config.method_kinds import parse_method
    from tunesmith.model.gated_mlp import recompute_mlp_activations
    from tunesmith.model.methods import apply_method
    from tunesmith.model.precision import keep_trainable_in_master, training_plan
    from tunesmith.model.recompute import recompute_cheap_activations

    torch.manual_seed(0)
    LlamaForCausalLM(llama_config()).save_pretrained(tmp_path / "model", safe_serialization=True)
    precision = "bf16" if dtype == "bfloat16" else "fp32"
    config = validate_config(run_config(tmp_path / "model", method, dtype, precision))
    estimate = estimate_memory(config)
    plan = training_plan(config, "cpu")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "model", dtype=plan.load_dtype)
    assert recompute_mlp_activations(model) == SHAPE["num_hidden_layers"]
    assert recompute_cheap_activations(model) == SHAPE["num_hidden_layers"]
    model = apply_method(model, parse_method(method)).train()  # as training runs it: dropout on, peft's DoRA caching nothing
    keep_trainable_in_master(model, plan)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 32))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # a padded row: sdpa gets a mask

    activations = saved_activation_bytes(model, ids, mask, plan.autocast)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    optimizer.step()

    assert estimate.weights == sum(p.numel() * p.element_size() for p in model.parameters())
    assert estimate.gradients == sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    states = [t for state in optimizer.state.values() for key, t in state.items() if key != "step"]
    assert estimate.optimizer == sum(t.nbytes for t in states)
    assert estimate.activations == pytest.approx(activations, rel=0.05)


def test_estimate_command_prints_counts_and_peak(config_only_dir, tmp_path, capsys):
    from tunesmith.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(config_only_dir, {"kind": "lora"})))

    assert main(["estimate", str(path), "train.batch_size=4"]) == 0

    out = capsys.readouterr().out
    assert "trainable params:" in out and "peak (estimate)" in out and "batch 4 x 32 tokens" in out
