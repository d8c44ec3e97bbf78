"""Gated MLPs that recompute act(gate) in backward (model/gated_mlp.py): autograd's loss and gradients, one
tokens x intermediate tensor less kept per layer, and only the plain formula swapped."""

from __future__ import annotations

import copy

import pytest
import torch

from saved_tensors import held_for_backward_bytes
from tiny_decoders import SHAPE, assert_same_training, random_decoder
from tunesmith.model.gated_mlp import is_gated_mlp, recompute_mlp_activations


@pytest.mark.parametrize("family, method", [("llama", "full"), ("gemma", "full"), ("llama", "lora")])
def test_loss_and_gradients_equal_autograds(family, method):
    from tunesmith.config.method_kinds import parse_method
    from tunesmith.model.methods import apply_method

    plain = random_decoder(family)
    if method == "lora":  # the MLP's forward calls the LoRA-wrapped linears, in whichever order the two are applied
        plain = apply_method(plain, parse_method({"kind": "lora", "rank": 4}))
    swapped = copy.deepcopy(plain)
    assert recompute_mlp_activations(swapped) == SHAPE["num_hidden_layers"]
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))

    assert_same_training(plain.train(), swapped.train(), ids)


def saved_bytes(model, ids) -> int:
    return held_for_backward_bytes(model, lambda: model(input_ids=ids, labels=ids).loss)


def test_each_layer_keeps_one_tokens_by_intermediate_tensor_less():
    plain = random_decoder("llama").train()
    swapped = copy.deepcopy(plain)
    recompute_mlp_activations(swapped)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))

    one_tensor = ids.numel() * SHAPE["intermediate_size"] * 4  # float32
    assert saved_bytes(plain, ids) - saved_bytes(swapped, ids) == SHAPE["num_hidden_layers"] * one_tensor


def test_without_gradients_the_output_is_the_same():
    plain = random_decoder("llama").eval()
    swapped = copy.deepcopy(plain)
    recompute_mlp_activations(swapped)
    ids = torch.randint(0, SHAPE["vocab_size"], (1, 9))
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, swapped(input_ids=ids).logits)


def test_only_the_plain_gated_formula_is_swapped():
    from transformers import Phi3Config
    from transformers.models.phi3.modeling_phi3 import Phi3MLP

    class ClampedMLP(torch.nn.Module):  # gate/up/down/act_fn like Llama's, but clamps between the steps
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = (torch.nn.Linear(4, 4) for _ in range(3))
            self.act_fn = torch.nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x).clamp(max=1.0)) * self.up_proj(x))

    assert is_gated_mlp(random_decoder("llama").model.layers[0].mlp)
    assert not is_gated_mlp(ClampedMLP())
    assert not is_gated_mlp(Phi3MLP(Phi3Config(hidden_size=8, intermediate_size=16)))  # fused gate_up_proj
    assert recompute_mlp_activations(torch.nn.Sequential(ClampedMLP())) == 0


def test_training_preparation_swaps_the_gated_mlps(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from conftest import tiny_run_config

    from tunesmith.config.load import validate_config
    from tunesmith.train.model_setup import prepare_model

    config = validate_config(tiny_run_config(tiny_model_dir, tmp_path, tmp_path / "run"))
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=lambda *args: None)
    model = prepare_model(config, accelerator).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    layers = model.config.num_hidden_layers

    # The prepared model keeps exactly two intermediate-wide tensors per layer fewer than autograd alone would:
    # act(gate), and the product act(gate) * up, rebuilt from gate and up for the down projection
    # (model/recompute.py; the class's own forward gives it no recipe).
    recomputed = saved_bytes(model, ids)
    for layer in model.get_decoder().layers:
        del layer.mlp.forward  # back to the class's own forward
    assert saved_bytes(model, ids) - recomputed == 2 * layers * ids.numel() * model.config.intermediate_size * 4
