"""train.kernels (Liger, swapped module by module) and train.compile, checked on CPU.

Liger's kernels are Triton and need a GPU, so the swap is checked with stand-ins that compute the same
functions in plain torch: the swapped model must give the original model's outputs, and LoRA must still find
every linear layer. The refusals are checked as they would meet a user.
"""

from __future__ import annotations

import types

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.model.kernels import FAMILIES, apply_kernels, compile_layers, swap_liger_modules


class ReferenceRMSNorm(torch.nn.Module):
    """LigerRMSNorm's function: x / rms(x) * (offset + weight), computed in float32 ('llama' casting)."""

    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", in_place=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.eps, self.offset = eps, offset

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed.to(x.dtype) * (self.offset + self.weight)).to(x.dtype)


class ReferenceSwiGLU(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = torch.nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = torch.nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = torch.nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


STAND_INS = types.SimpleNamespace(LigerRMSNorm=ReferenceRMSNorm, LigerSwiGLUMLP=ReferenceSwiGLU)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


def test_swapped_modules_compute_what_the_originals_did_and_lora_still_finds_the_linears():
    from tunesmith.config.method_kinds import parse_method
    from tunesmith.model.methods import apply_method

    model = tiny_llama()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())

    swapped = swap_liger_modules(model, STAND_INS, FAMILIES["llama"])

    assert swapped == 2 * 2 + 1 + 2  # two norms per layer, the final norm, one MLP per layer
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == linears
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5)
    lora = apply_method(model, parse_method(dict(kind="lora", rank=2)))
    adapted = {name.split(".")[-1] for name, module in lora.named_modules() if hasattr(module, "lora_A")}
    assert {"gate_proj", "up_proj", "down_proj", "q_proj"} <= adapted


def test_liger_is_refused_for_other_families_off_gpu_and_when_not_installed():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    with pytest.raises(TunesmithError, match="supports the llama.*not 'gpt2'"):
        apply_kernels(gpt2, "liger", "cuda")
    with pytest.raises(TunesmithError, match="CUDA GPU"):
        apply_kernels(tiny_llama(), "liger", "cpu")
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        with pytest.raises(TunesmithError, match=r"pip install 'tunesmith\[liger\]'"):
            apply_kernels(tiny_llama(), "liger", "cuda")


def test_compiled_layers_give_the_same_loss_and_gradients():
    """Graph capture of the layers, forward and backward (inductor's code generation takes minutes on CPU)."""
    model, compiled = tiny_llama(), tiny_llama()
    assert compile_layers(compiled, backend="aot_eager") == 2
    ids = torch.randint(0, 64, (2, 12))
    losses = []
    for candidate in (model, compiled):
        loss = candidate(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    grads = [dict((n, p.grad) for n, p in m.named_parameters()) for m in (model, compiled)]
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-5), name
