"""CPU training attention (model/cpu_attention.py): transformers' sdpa output bit for bit, gradients to float32
rounding, and the repeated key/value heads no longer kept; only the model it is set on changes."""

from __future__ import annotations

import copy

import pytest
import torch

from saved_tensors import held_for_backward_bytes
from tiny_decoders import SHAPE, random_decoder
from tunesmith.model.cpu_attention import NAME, use_cpu_attention

HEADS, KV_HEADS, HEAD_DIM = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"], SHAPE["head_dim"]
IDS = torch.randint(0, SHAPE["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
BATCHES = {  # what the decoder takes from training batches (train/forward.py)
    "packed": {"position_ids": torch.cat([torch.arange(6), torch.arange(10)]).repeat(2, 1)},  # samples kept apart
    "padded": {"attention_mask": torch.tensor([[1] * 16, [1] * 11 + [0] * 5])},
    "one sample per row": {},  # no mask at all: causal
}


def pair():
    plain = random_decoder("llama").train()
    plain.set_attn_implementation("sdpa")
    model = copy.deepcopy(plain)
    assert use_cpu_attention(model) and model.config._attn_implementation == NAME
    return plain, model


def run(model, inputs: dict):
    model.zero_grad()
    logits = model(input_ids=IDS, use_cache=False, **inputs).logits
    logits.square().mean().backward()
    return logits.detach(), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("batch", BATCHES)
def test_output_bit_for_bit_and_gradients_to_float32_rounding(batch):
    plain, model = pair()
    expected_logits, expected_grads = run(plain, BATCHES[batch])
    logits, grads = run(model, BATCHES[batch])
    assert torch.equal(logits, expected_logits)
    for name, grad in expected_grads.items():
        # The kernel sums each group's key/value gradients in its own order, not the repeat's backward's.
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_repeated_key_and_value_heads_are_no_longer_kept():
    plain, model = pair()
    inputs = BATCHES["packed"]  # the mask that made transformers repeat them

    def held(decoder) -> int:
        return held_for_backward_bytes(decoder, lambda: decoder(input_ids=IDS, use_cache=False, **inputs).logits)

    repeated = 2 * (HEADS - KV_HEADS) * HEAD_DIM  # keys and values, per token and layer
    assert held(plain) - held(model) == SHAPE["num_hidden_layers"] * repeated * IDS.numel() * 4


def test_only_the_model_it_is_set_on_changes_and_its_saved_config_does_not():
    _, model = pair()
    assert random_decoder("llama").config._attn_implementation != NAME
    assert NAME not in str(model.config.to_dict())


def test_other_attention_kinds_keep_theirs():
    model = random_decoder("llama")
    model.set_attn_implementation("eager")
    assert not use_cpu_attention(model)
    assert model.config._attn_implementation == "eager"


def test_cpu_training_preparation_sets_it(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from conftest import tiny_run_config

    from tunesmith.config.load import validate_config
    from tunesmith.train.model_setup import prepare_model

    config = validate_config(tiny_run_config(tiny_model_dir, tmp_path, tmp_path / "run"))
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=lambda *args: None)
    assert prepare_model(config, accelerator).config._attn_implementation == NAME
