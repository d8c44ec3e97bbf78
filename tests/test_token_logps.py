"""The chunked head: log-probs, losses and gradients equal the unchunked formula and transformers' own logits."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tunesmith.data.collator import TARGET_INDEX, pad_batch, target_index
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.token_logps import LogpsModel, chunked_logps, token_logps

VOCAB = 97


def naive_logps(weight, hidden, targets, softcap=None):
    logits = hidden.double() @ weight.double().T
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_logps_and_gradients_equal_the_full_logits_formula(softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, VOCAB, bias=False)
    hidden = torch.randn(11, 16, requires_grad=True)
    targets = torch.randint(VOCAB, (11,))
    upstream = torch.randn(11)  # any per-token weighting (DPO sums per reply, SFT sums all)
    chunked = chunked_logps(head, hidden, targets, softcap, chunk_tokens=3)  # 4 chunks, the last one short
    grads = torch.autograd.grad((chunked * upstream).sum(), [hidden, head.weight])
    expected = naive_logps(head.weight, hidden, targets, softcap)
    expected_grads = torch.autograd.grad((expected * upstream.double()).sum(), [hidden, head.weight])
    torch.testing.assert_close(chunked.double(), expected, rtol=1e-5, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


class LinearSubclass(torch.nn.Linear):
    """A head the fused function does not take (not exactly nn.Linear): it goes through the module path."""


@pytest.mark.parametrize("head_trains", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_head_and_module_path_equal_the_full_logits_formula(head_trains, temperature):
    """train/fused_head.py (plain float32 heads) and the per-chunk module path (any other head) give the full
    logits' log-probs and gradients, with the head trained or frozen, at any temperature."""
    from tunesmith.train.fused_head import fuses

    torch.manual_seed(1)
    plain = torch.nn.Linear(16, VOCAB, bias=False).requires_grad_(head_trains)
    other = LinearSubclass(16, VOCAB, bias=False).requires_grad_(head_trains)
    other.weight.data.copy_(plain.weight.data)
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(VOCAB, (10,))
    upstream = torch.randn(10)
    wrt = [hidden, plain.weight] if head_trains else [hidden]
    expected = (hidden.double() @ plain.weight.double().T / temperature).log_softmax(-1).gather(-1, targets[:, None])
    expected_grads = torch.autograd.grad((expected.squeeze(-1) * upstream.double()).sum(), wrt)
    assert fuses(plain, hidden) and not fuses(other, hidden)
    for head in (plain, other):
        logps = chunked_logps(head, hidden, targets, chunk_tokens=4, temperature=temperature)  # 3 chunks, one short
        grads = torch.autograd.grad((logps * upstream).sum(), [hidden, head.weight] if head_trains else [hidden])
        torch.testing.assert_close(logps.double(), expected.squeeze(-1), rtol=1e-5, atol=1e-6)
        for grad, expected_grad in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_only_a_whole_float32_linear_head_is_fused():
    from peft import LoraConfig, get_peft_model

    from tunesmith.train.fused_head import fuses

    hidden = torch.randn(3, 8)
    head = torch.nn.Linear(8, VOCAB, bias=False)
    assert fuses(head, hidden)
    assert not fuses(torch.nn.Linear(8, VOCAB), hidden)  # a bias
    assert not fuses(head, hidden.bfloat16()) and not fuses(head.to(torch.bfloat16), hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fuses(head, hidden)
    sharded = torch.nn.Linear(8, VOCAB, bias=False)
    sharded.weight.ds_id = 0  # what DeepSpeed ZeRO-3 marks its partitioned parameters with
    assert not fuses(sharded, hidden)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, VOCAB, bias=False)),
                           LoraConfig(r=2, target_modules=["0"]))
    assert not fuses(model.base_model.model[0], hidden)  # LoRA on the head: its module call adds the adapter


def test_target_index_holds_the_positions_of_trained_next_tokens():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6], [IGNORE, 7, IGNORE, 8]])
    mask = labels[:, 1:] != IGNORE
    expected = [row * 4 + t for row in range(2) for t in range(3) if mask[row, t]]
    assert target_index(labels).tolist() == expected == [1, 2, 4, 6]


def random_batch(seed: int = 0, rows: int = 3) -> dict[str, torch.Tensor]:
    rng = random.Random(seed)
    samples = []
    for _ in range(rows):
        ids = [rng.randrange(VOCAB) for _ in range(rng.randint(4, 12))]
        prompt = rng.randint(1, len(ids) - 1)
        samples.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return pad_batch(samples, 0)


def tiny_model(kind: str = "llama"):
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    if kind == "gemma2":  # caps its logits: softcap * tanh(logits / softcap)
        return Gemma2ForCausalLM(Gemma2Config(**shape, final_logit_softcapping=2.0, attn_implementation="eager"))
    return LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=kind == "tied"))


def reference_loss(model, batch) -> torch.Tensor:
    """Summed next-token cross entropy from transformers' own full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.double().reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")


@pytest.mark.parametrize("kind", ["llama", "tied", "gemma2"])
def test_token_loss_and_gradients_equal_transformers_full_logits(kind):
    model = tiny_model(kind).train()
    batch = random_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = -token_logps(LogpsModel(model), batch).double().sum()
    grads = torch.autograd.grad(loss, params)
    expected = reference_loss(model, batch)
    expected_grads = torch.autograd.grad(expected, params)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_reply_logps_are_the_per_row_sums_of_token_logps():
    from tunesmith.train.stages.preference import reply_logps

    model = tiny_model().eval()
    batch = random_batch(seed=3, rows=4)
    with torch.no_grad():
        sums, lengths = reply_logps(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    token = logits.double().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    torch.testing.assert_close(sums.double(), (token * mask).sum(-1), rtol=1e-5, atol=1e-6)
    assert lengths.tolist() == mask.sum(-1).tolist()
    assert batch[TARGET_INDEX].numel() == int(mask.sum())


def test_a_stage_trains_through_the_wrappers_forward():
    """Distributed wrappers (DDP, DeepSpeed) act in the forward call of the module they wrap: the loss must be
    computed inside LogpsModel.forward, not by calling the decoder and head from outside."""
    model = LogpsModel(tiny_model())
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    logps = token_logps(model, random_batch())
    assert calls == [logps.shape]


class MatrixProducts(TorchDispatchMode):
    """Counts the matrix products run while it is on."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("head_trains, summed, products", [
    (False, False, (6, 0, 3)),  # logits and input gradient per chunk, both in the forward pass
    (True, True, (9, 0, 3)),  # the weight gradient's sum too, while the probabilities are at hand
    (True, False, (6, 6, 3)),  # per-token factors: the backward pass recomputes the logits for the weight
])
def test_matrix_products_of_the_fused_head_per_pass(head_trains, summed, products):
    """3 chunks: forward, backward, and a forward without gradients (the log-probs alone)."""
    from tunesmith.train.fused_head import fused_head_logps

    torch.manual_seed(2)
    weight, targets = torch.randn(VOCAB, 16, requires_grad=head_trains), torch.randint(VOCAB, (10,))
    hidden = torch.randn(10, 16, requires_grad=True)
    with MatrixProducts() as forward:
        logps = fused_head_logps(hidden, weight, targets, 1.0, 4, summed)
    with MatrixProducts() as backward:
        logps.sum().backward()
    with torch.no_grad(), MatrixProducts() as inference:
        fused_head_logps(hidden, weight, targets, 1.0, 4, summed)
    assert (forward.count, backward.count, inference.count) == products


@pytest.mark.parametrize("factors", ["one for all", "per token"])
def test_a_summed_trained_head_gives_the_formulas_gradients(factors):
    """`summed` computes the weight gradient's sum in the forward pass; a backward whose factors turn out
    unequal recomputes it from the logits instead: both equal the full-logits formula."""
    from tunesmith.train.fused_head import fused_head_logps

    torch.manual_seed(3)
    weight, targets = torch.randn(VOCAB, 16, requires_grad=True), torch.randint(VOCAB, (10,))
    hidden = torch.randn(10, 16, requires_grad=True)
    upstream = torch.full((10,), -0.125) if factors == "one for all" else torch.randn(10)
    logps = fused_head_logps(hidden, weight, targets, 0.7, 4, summed=True)
    grads = torch.autograd.grad((logps * upstream).sum(), [hidden, weight])
    expected = (hidden.double() @ weight.double().T / 0.7).log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    expected_grads = torch.autograd.grad((expected * upstream.double()).sum(), [hidden, weight])
    torch.testing.assert_close(logps.double(), expected, rtol=1e-5, atol=1e-6)
    for grad, expected_grad in zip(grads, expected_grads):  # float32 sums over tokens against float64's
        torch.testing.assert_close(grad, expected_grad.float(), rtol=1e-5, atol=1e-5)
