"""Padding-free batches: the decoder runs on a batch's real tokens as one row, and losses and gradients equal the
padded rows' (rtol 1e-5), packed or not."""

from __future__ import annotations

import random

import pytest
import torch

from tunesmith.data.collator import TOKEN_INDEX, pad_batch
from tunesmith.data.packing import pack_samples
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.forward import runs_padding_free
from tunesmith.train.token_logps import LogpsModel, token_logps

VOCAB = 97


def samples_of(lengths: list[int], seed: int = 0) -> list[Encoded]:
    rng = random.Random(seed)
    samples = []
    for length in lengths:
        ids = [rng.randrange(VOCAB) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        samples.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return samples


def tiny_llama(attention: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attention)
    return LlamaForCausalLM(config).train()


def decoder_row_shapes(model, batch) -> tuple[torch.Tensor, list, list[torch.Tensor]]:
    """(summed token loss, the input shapes the decoder saw, gradients of every parameter)."""
    shapes = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    loss = -token_logps(LogpsModel(model), batch).double().sum()
    hook.remove()
    return loss, shapes, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("packed", [False, True])
def test_padding_free_loss_and_gradients_equal_the_padded_rows(packed):
    model = tiny_llama("sdpa")
    samples = samples_of([5, 30, 9, 17, 4, 26], seed=1)
    batch = pad_batch(pack_samples(samples, 40) if packed else samples, 0)
    rows, width = batch["input_ids"].shape
    real = int(batch["attention_mask"].sum())
    assert real < rows * width  # there is padding to leave out
    loss, shapes, grads = decoder_row_shapes(model, batch)
    padded = {key: value for key, value in batch.items() if key != TOKEN_INDEX}  # the padded rows' path
    expected, expected_shapes, expected_grads = decoder_row_shapes(model, padded)
    assert shapes == [(1, real)] and expected_shapes == [(rows, width)]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_rows_without_padding_or_with_eager_attention_stay_rows():
    """One row scores every pair of its tokens under sdpa: equal-length rows (nothing to save) keep their layout,
    and eager attention, whose probabilities are kept for the backward pass, always does."""
    sdpa, eager = tiny_llama("sdpa").config, tiny_llama("eager").config
    even = pad_batch(samples_of([24] * 6), 0)
    ragged = pad_batch(samples_of([24, 3, 4, 5, 3, 4]), 0)
    assert not runs_padding_free(even, sdpa)
    assert runs_padding_free(ragged, sdpa)
    assert not runs_padding_free(ragged, eager)
    assert runs_padding_free(even, type(sdpa)(**{**sdpa.to_dict(), "attn_implementation": "flash_attention_2"}))
