"""Random two-layer decoders of real architectures, and the check that two of them train alike bit for bit."""

from __future__ import annotations

import torch

SHAPE = dict(vocab_size=300, hidden_size=32, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8)


def random_decoder(family: str):
    """llama; gemma (RMSNorm scaled by 1 + weight, tanh-approximated GELU); qwen3 (RMSNorms on q and k too)."""
    from transformers import (GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen3Config,
                              Qwen3ForCausalLM)

    torch.manual_seed(0)
    if family == "gemma":
        return GemmaForCausalLM(GemmaConfig(**SHAPE, hidden_activation="gelu_pytorch_tanh")).float()
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**SHAPE))
    return LlamaForCausalLM(LlamaConfig(**SHAPE))


def loss_and_grads(model, ids, backwards: int = 1):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    for index in range(backwards):
        loss.backward(retain_graph=index < backwards - 1)
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_training(expected, model, ids, backwards: int = 1) -> None:
    """`model` gives `expected`'s loss and every gradient bit for bit (after `backwards` backward passes)."""
    expected_loss, expected_grads = loss_and_grads(expected, ids, backwards)
    loss, grads = loss_and_grads(model, ids, backwards)
    assert torch.equal(expected_loss, loss)
    assert expected_grads.keys() == grads.keys() and len(expected_grads) > 0
    for name, grad in expected_grads.items():
        assert torch.equal(grads[name], grad), name
