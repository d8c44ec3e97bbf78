"""Methods: which weights train, counted as peft counts them; QLoRA on a 4-bit / 8-bit base on CPU."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from tunesmith.config.method_kinds import parse_method
from tunesmith.config.schema import ModelConfig, RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.model.estimate import build_meta_model
from tunesmith.model.methods import apply_method, count_parameters

needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


def small_llama(layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2))


def method(**settings):
    return parse_method(settings)


def trainable_names(model) -> set[str]:
    return {name for name, param in model.named_parameters() if param.requires_grad}


def test_mistral_7b_lora_r8_count_on_the_meta_device():
    from transformers import MistralConfig

    config = MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=32000)
    model = apply_method(build_meta_model(config, torch.bfloat16), method(kind="lora", rank=8))

    count = count_parameters(model)

    assert all(param.device.type == "meta" for param in model.parameters())
    assert (count.trainable, count.total) == (20_971_520, 7_262_703_616)
    assert f"{count.percent:.4f}" == "0.2888"


def test_freeze_trains_exactly_the_last_layers():
    model = apply_method(small_llama(), method(kind="freeze", layers=2))

    expected = {f"model.layers.{i}.{name}" for i in (1, 2) for name, _ in small_llama(1).model.layers[0].named_parameters()}
    assert trainable_names(model) == expected
    naive = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("model.layers.1.", "model.layers.2.")))
    assert count_parameters(model).trainable == naive


def test_freeze_named_modules_only():
    model = apply_method(small_llama(), method(kind="freeze", layers=0, modules=["embed_tokens", "layers.0.mlp"]))

    assert trainable_names(model) == {"model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight",
                                      "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"}


@pytest.mark.parametrize("settings, message", [
    ({"layers": 4}, "has 3 layers"),
    ({"layers": 1, "modules": ["mlpp"]}, "'mlpp' matches no module"),
])
def test_freeze_rejects_what_the_model_does_not_have(settings, message):
    with pytest.raises(TunesmithError, match=message):
        apply_method(small_llama(), method(kind="freeze", **settings))


def test_freeze_that_trains_nothing_is_a_config_error():
    with pytest.raises(ValueError, match="trains nothing"):
        method(kind="freeze", layers=0)


def test_lora_count_matches_the_naive_formula_and_peft():
    model = apply_method(small_llama(), method(kind="lora", rank=4, targets=["q_proj", "down_proj"]))

    # per layer: q (64 -> 64) and down (128 -> 64): r * (in + out) each
    assert count_parameters(model).trainable == 3 * 4 * ((64 + 64) + (128 + 64))
    assert count_parameters(model).trainable == model.get_nb_trainable_parameters()[0]


def test_rslora_and_dora_reach_the_adapter():
    plain = apply_method(small_llama(), method(kind="lora", rank=4, alpha=8))
    rs = apply_method(small_llama(), method(kind="lora", rank=4, alpha=8, rslora=True, dora=True))
    q_plain = plain.base_model.model.model.layers[0].self_attn.q_proj
    q_rs = rs.base_model.model.model.layers[0].self_attn.q_proj

    assert q_plain.scaling["default"] == pytest.approx(8 / 4)
    assert q_rs.scaling["default"] == pytest.approx(8 / math.sqrt(4))
    assert q_rs.use_dora["default"] and not q_plain.use_dora["default"]
    # DoRA adds one magnitude per output feature of every adapted module
    magnitudes = sum(p.numel() for n, p in rs.named_parameters() if "magnitude" in n)
    assert magnitudes == 3 * (64 + 32 + 32 + 64 + 128 + 128 + 64)


def test_modules_to_save_trains_a_full_copy():
    lora = {"rank": 4, "targets": ["q_proj"]}
    base = count_parameters(apply_method(small_llama(), method(kind="lora", **lora))).trainable
    model = apply_method(small_llama(), method(kind="lora", **{**lora, "modules_to_save": ["embed_tokens"]}))

    assert count_parameters(model).trainable == base + 300 * 64


@pytest.mark.parametrize("lora, message", [
    ({"targets": ["qq_proj"]}, "method.targets"),
    ({"modules_to_save": ["embed_tokenz"]}, "'embed_tokenz' matches no module"),
])
def test_lora_names_that_match_nothing_are_errors(lora, message):
    with pytest.raises(TunesmithError, match=message):
        apply_method(small_llama(), method(kind="lora", **lora))


def test_qlora_and_quantization_must_come_together():
    base = {"data": {"datasets": ["x"]}}
    with pytest.raises(ValueError, match="set model.quantization_bit"):
        RunConfig.model_validate({**base, "model": {"path": "m"}, "method": {"kind": "qlora"}})
    with pytest.raises(ValueError, match="use method.kind: qlora"):
        RunConfig.model_validate({**base, "model": {"path": "m", "quantization_bit": 4}, "method": {"kind": "full"}})
    with pytest.raises(TunesmithError, match="needs a quantized base"):
        apply_method(small_llama(), method(kind="qlora"))


@needs_bnb
@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_on_cpu_quantizes_the_base_and_trains_only_the_adapter(tmp_path, bits):
    import bitsandbytes as bnb

    from tunesmith.model.load import load_model

    small_llama().save_pretrained(tmp_path, safe_serialization=True)
    model_config = ModelConfig(path=str(tmp_path), dtype="float32", quantization_bit=bits)
    settings = {"rank": 4, "targets": "all-linear"}
    model = apply_method(load_model(model_config), method(kind="qlora", **settings))
    reference = apply_method(small_llama(), method(kind="lora", **settings))

    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
    # peft counts a 4-bit weight as twice its packed numel: the same totals as the unquantized model
    assert count_parameters(model) == count_parameters(reference)
    # bitsandbytes repacks 4-bit weights for its CPU kernel on the first forward, so compare the float ones
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()
              if not p.requires_grad and p.is_floating_point()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 300, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    assert all(torch.equal(frozen[name], p) for name, p in model.named_parameters() if name in frozen)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(not p.requires_grad for p in model.parameters() if not p.is_floating_point())
