"""The precision plan: a table over devices and settings, and what it does to a model's training on CPU."""

from __future__ import annotations

import pytest
import torch

from tunesmith.config.method_kinds import parse_method
from tunesmith.errors import TunesmithError
from tunesmith.model.methods import apply_method
from tunesmith.model.precision import DeviceCaps, keep_trainable_in_master, plan_precision

CPU = DeviceCaps("cpu", bf16=False)
AMPERE = DeviceCaps("cuda", bf16=True)
TURING = DeviceCaps("cuda", bf16=False)  # fp16 tensor cores only
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


@pytest.mark.parametrize("dtype, precision, method, device, expected", [
    # expected: frozen, load, autocast, loss scaling, tf32, accelerate's name (trainable is always float32)
    ("auto", "auto", "lora", CPU, (F32, F32, None, False, False, "no")),
    ("auto", "auto", "full", CPU, (F32, F32, None, False, False, "no")),
    ("auto", "bf16", "lora", CPU, (BF16, BF16, BF16, False, False, "bf16")),
    ("auto", "auto", "lora", AMPERE, (BF16, BF16, BF16, False, True, "bf16")),
    ("auto", "auto", "full", AMPERE, (BF16, F32, BF16, False, True, "bf16")),
    ("auto", "auto", "freeze", AMPERE, (BF16, BF16, BF16, False, True, "bf16")),
    ("bfloat16", "bf16", "full", AMPERE, (BF16, F32, BF16, False, True, "bf16")),
    ("auto", "fp32", "full", AMPERE, (F32, F32, None, False, True, "no")),  # fp32 asked: fp32 weights
    ("auto", "fp32", "lora", AMPERE, (F32, F32, None, False, True, "no")),
    ("bfloat16", "fp32", "lora", AMPERE, (BF16, BF16, None, False, True, "no")),  # bf16 base, fp32 adapters
    ("auto", "auto", "lora", TURING, (F16, F16, F16, True, True, "fp16")),
    ("auto", "auto", "full", TURING, (F16, F32, F16, True, True, "fp16")),
    ("float16", "fp16", "full", AMPERE, (F16, F32, F16, True, True, "fp16")),
    ("float32", "bf16", "lora", AMPERE, (F32, F32, BF16, False, True, "bf16")),
])
def test_plan_table(dtype, precision, method, device, expected):
    plan = plan_precision(dtype, precision, method, device)
    got = (plan.frozen_dtype, plan.load_dtype, plan.autocast, plan.loss_scaling, plan.tf32, plan.accelerate_name)
    assert got == expected
    assert plan.master_dtype == torch.float32


@pytest.mark.parametrize("dtype, precision, method, device, words", [
    ("auto", "bf16", "lora", TURING, "bfloat16"),
    ("auto", "fp16", "lora", CPU, "CUDA GPU"),
    ("bfloat16", "fp32", "freeze", AMPERE, "model.dtype float32"),
])
def test_impossible_combinations_are_refused_with_the_fix(dtype, precision, method, device, words):
    with pytest.raises(TunesmithError, match=words):
        plan_precision(dtype, precision, method, device)


def tiny_model(dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).to(dtype)


def test_trainable_parameters_become_float32_masters_including_modules_to_save_copies():
    plan = plan_precision("auto", "auto", "lora", AMPERE)
    lora = parse_method(dict(kind="lora", rank=4, modules_to_save=["lm_head"]))
    model = apply_method(tiny_model(plan.load_dtype), lora)
    keep_trainable_in_master(model, plan)

    trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert any("modules_to_save" in name for name in trainable)
    assert set(trainable.values()) == {torch.float32} and frozen == {torch.bfloat16}


def one_step(model, autocast, lr=1e-5):
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()


def unchanged_fraction(model, step) -> float:
    before = [p.detach().clone() for p in model.parameters()]
    step(model)
    same = sum(int((p == old).sum()) for p, old in zip(model.parameters(), before))
    return same / sum(old.numel() for old in before)


def test_full_bf16_plan_updates_the_weights_where_pure_bf16_rounds_the_step_away():
    """AdamW's first step moves each weight by about lr; below half a bf16 ulp the bf16 weight does not move."""
    plan = plan_precision("auto", "auto", "full", AMPERE)
    model = apply_method(tiny_model(plan.load_dtype), parse_method(dict(kind="full")))
    keep_trainable_in_master(model, plan)
    mixed = unchanged_fraction(model, lambda m: one_step(m, plan.autocast))
    pure = unchanged_fraction(tiny_model(torch.bfloat16), lambda m: one_step(m, None))
    print(f"unchanged after one step at lr 1e-5: float32 masters {mixed:.3f}, pure bf16 {pure:.3f}")
    assert mixed < 0.05 and pure > 0.5


def test_fp16_full_run_keeps_float32_grads_that_the_scaler_can_unscale():
    """dtype float16 + full + fp16: the scaler refuses fp16 gradients; the plan's float32 masters pass."""
    plan = plan_precision("float16", "fp16", "full", AMPERE)
    assert plan.loss_scaling

    def scaled_step(model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cpu")
        ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(input_ids=ids, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)

    with pytest.raises(ValueError, match="FP16 gradients"):
        scaled_step(tiny_model(torch.float16))
    model = apply_method(tiny_model(plan.load_dtype), parse_method(dict(kind="full")))
    keep_trainable_in_master(model, plan)
    scaled_step(model)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("method", [{"kind": "full"}, {"kind": "freeze", "layers": 1},
                                    {"kind": "lora", "rank": 4, "modules_to_save": ["lm_head"]}])
def test_training_preparation_follows_the_plan(tiny_model_dir, tmp_path, method):
    """The training command's model (train/model_setup.py) under bf16 autocast: float32 masters, bf16 frozen."""
    from types import SimpleNamespace

    from conftest import tiny_run_config

    from tunesmith.config.load import validate_config
    from tunesmith.train.model_setup import prepare_model

    config = validate_config(tiny_run_config(tiny_model_dir, tmp_path, tmp_path / "run", method=method,
                                             train={"precision": "bf16"}))
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=lambda *args: None)
    model = prepare_model(config, accelerator)

    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32}
    assert frozen <= {torch.bfloat16} and (method["kind"] == "full") == (not frozen)
