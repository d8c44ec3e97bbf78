"""Norm outputs, trained norms' normalised inputs and act(gate) * up rebuilt in the backward pass instead of kept
(model/recompute.py): autograd's loss and gradients bit for bit, exactly those tensors' bytes less, and out of the
way of other saved-tensor hooks."""

from __future__ import annotations

import copy

import pytest
import torch

from saved_tensors import held_for_backward_bytes
from tiny_decoders import SHAPE, assert_same_training, random_decoder
from tunesmith.model.gated_mlp import recompute_mlp_activations
from tunesmith.model.recompute import recompute_cheap_activations

LAYERS, HIDDEN, INTERMEDIATE = SHAPE["num_hidden_layers"], SHAPE["hidden_size"], SHAPE["intermediate_size"]


def tiny(family: str, method: str = "full"):
    """A random model of `family` with gated MLPs swapped as training swaps them (model/gated_mlp.py)."""
    from tunesmith.config.method_kinds import parse_method
    from tunesmith.model.methods import apply_method

    model = random_decoder(family)
    recompute_mlp_activations(model)
    if method == "lora":
        model = apply_method(model, parse_method({"kind": "lora", "rank": 4}))
    return model.train()


def rebuilding(model):
    model = copy.deepcopy(model)
    assert recompute_cheap_activations(model) == LAYERS
    return model


def held(model, ids) -> int:
    return held_for_backward_bytes(model, lambda: model(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize("family, method", [("llama", "full"), ("llama", "lora"), ("gemma", "lora"),
                                            ("qwen3", "full")])
def test_loss_and_gradients_equal_autograds_bit_for_bit(family, method):
    plain = tiny(family, method)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    assert_same_training(plain, rebuilding(plain), ids)


def test_a_graph_kept_for_a_second_backward_rebuilds_again():
    plain = tiny("llama", "lora")
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    assert_same_training(plain, rebuilding(plain), ids, backwards=2)


def test_under_autocast_the_rebuilt_tensors_match_the_forward():
    """float32 weights, bf16 compute: the linears keep autocast's bf16 copies of the norms' outputs (nothing to
    rebuild there); the bf16 product act(gate) * up and the norms' float32 normalised inputs are rebuilt."""
    plain = tiny("llama", "full")
    rebuilt = rebuilding(plain)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = LAYERS * INTERMEDIATE * 2 + 2 * LAYERS * HIDDEN * 4
        assert held(plain, ids) - held(rebuilt, ids) == expected * ids.numel()
        assert_same_training(plain, rebuilt, ids)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_exactly_the_rebuilt_tensors_are_no_longer_held(method):
    plain = tiny("llama", method)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    tensor = ids.numel() * 4  # bytes of one float32 value per token
    # Per layer: the product act(gate) * up (the down projection's input) and both norms' outputs (the inputs
    # of q/k/v and of gate/up). With LoRA, layer 0's first norm reads the frozen embeddings: it keeps no input of
    # its own, so the recipe keeps that input in place of the output, the same bytes. Full fine-tuning trains
    # the norms: each also keeps its normalised input for its weight's gradient, rebuilt too.
    rebuilt = LAYERS * INTERMEDIATE + (2 * LAYERS - 1) * HIDDEN if method == "lora" else \
        LAYERS * INTERMEDIATE + 2 * LAYERS * HIDDEN + 2 * LAYERS * HIDDEN
    assert held(plain, ids) - held(rebuilding(plain), ids) == rebuilt * tensor


def test_a_norm_the_formula_does_not_give_keeps_its_normalised_input():
    """An RMSNorm of another form (here x / mean |x|): the check at saving time finds it out."""
    import types

    def mean_abs_norm(self, x):
        return self.weight * (x / (x.abs().mean(-1, keepdim=True) + self.variance_epsilon))

    plain = tiny("llama", "full")
    for layer in plain.get_decoder().layers:
        layer.input_layernorm.forward = types.MethodType(mean_abs_norm, layer.input_layernorm)
    rebuilt = rebuilding(plain)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    # As above for full fine-tuning, less the input norms' normalised inputs, which stay kept
    expected = LAYERS * INTERMEDIATE + 2 * LAYERS * HIDDEN + LAYERS * HIDDEN
    assert held(plain, ids) - held(rebuilt, ids) == expected * ids.numel() * 4
    assert_same_training(plain, rebuilt, ids)


def test_sharded_norms_keep_their_outputs():
    """A ZeRO-3 weight is whole only inside its module's own passes: such a norm's output is kept."""
    rebuilt = rebuilding(tiny("llama", "lora"))
    for layer in rebuilt.get_decoder().layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.ds_id = 0  # what DeepSpeed marks its partitioned parameters with
    plain = tiny("llama", "lora")
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    assert held(plain, ids) - held(rebuilt, ids) == LAYERS * INTERMEDIATE * ids.numel() * 4
    assert_same_training(plain, rebuilt, ids)


def test_layers_under_checkpointing_leave_everything_to_it():
    plain = tiny("llama", "full")
    rebuilt = rebuilding(plain)
    for model in (plain, rebuilt):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))
    assert_same_training(plain, rebuilt, ids)


def test_another_saved_tensor_hook_sees_every_tensor_it_would_see_without_the_rebuilds():
    plain = tiny("llama", "lora")
    rebuilt = rebuilding(plain)
    ids = torch.randint(0, SHAPE["vocab_size"], (2, 12))

    def seen_by_outer_hook(model) -> list[tuple]:
        seen = []

        def pack(tensor):
            seen.append((tuple(tensor.shape), tensor.dtype))
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=ids, labels=ids).loss.backward()
        return seen

    assert seen_by_outer_hook(rebuilt) == seen_by_outer_hook(plain)


def test_training_preparation_runs_the_layers_with_rebuilds(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from conftest import tiny_run_config

    from tunesmith.config.load import validate_config
    from tunesmith.train.model_setup import prepare_model

    config = validate_config(tiny_run_config(tiny_model_dir, tmp_path, tmp_path / "run"))
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=lambda *args: None)
    model = prepare_model(config, accelerator).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 8))

    rebuilt = held(model, ids)
    for layer in model.get_decoder().layers:
        del layer.forward  # back to the class's own forward: no hook, no rebuilds
    assert held(model, ids) > rebuilt
