"""Packing: rows hold every sample once, within max_length, and the per-sample loss is the unpacked one, with
the attention kinds CI runs on a CPU (sdpa, eager, and FlexAttention traced without its kernel compile), packed
rows as they are or flattened into one row (as flash attention gets them)."""

from __future__ import annotations

import random

import pytest
import torch

from tunesmith.data.collator import pad_batch
from tunesmith.data.packing import POSITION_IDS, pack_samples, packing_efficiency
from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE
from tunesmith.train.forward import flatten_rows, flattens_packed_rows, model_inputs
from tunesmith.train.token_logps import token_logps


def random_samples(count: int, seed: int = 0, vocab: int = 97) -> list[Encoded]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        length = rng.randint(3, 40)
        ids = [rng.randrange(vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        samples.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return samples


def test_rows_hold_every_sample_once_within_max_length():
    samples = random_samples(200)
    rows = pack_samples(samples, 64)
    assert all(len(row.input_ids) <= 64 for row in rows)
    pieces = []
    for row in rows:
        starts = [i for i, position in enumerate(row.meta[POSITION_IDS]) if position == 0] + [len(row.input_ids)]
        pieces += [tuple(row.input_ids[a:b]) for a, b in zip(starts, starts[1:])]
    assert sorted(pieces) == sorted(tuple(sample.input_ids) for sample in samples)
    real = sum(len(sample.input_ids) for sample in samples)
    assert packing_efficiency(rows, 64) == pytest.approx(real / (len(rows) * 64))
    assert len(rows) <= 2 * real / 64 + 1  # best fit wastes less than half of every row


def tiny_llama(attention: str, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation=attention)
    return LlamaForCausalLM(config).eval()


def per_token_losses(model, batch) -> torch.Tensor:
    return -token_logps(model, batch).double()


def as_one_row(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The packed batch as flash attention gets it: every tensor flattened into one row, the same target index."""
    flat = flatten_rows({key: batch[key] for key in ("input_ids", "position_ids", "labels")})
    return {**flat, "target_index": batch["target_index"]}


def packed_and_unpacked_losses(model, layout: str, alone_in_one_batch: bool = False):
    """([samples] each sample's summed loss from packed rows (or those rows flattened), [samples] the loss of the
    same sample unpacked: each alone, or all in one right-padded batch with an attention mask)."""
    samples = random_samples(12, seed=1)
    rows = pack_samples(samples, 96)
    assert len(rows) < len(samples)
    batch = pad_batch(rows, 0)  # padded rows: one batch, row-major
    counts_of = lambda chosen: [sum(1 for label in s.labels[1:] if label != IGNORE) for s in chosen]  # noqa: E731
    with torch.no_grad():
        if alone_in_one_batch:
            alone = [chunk.sum() for chunk in per_token_losses(model, pad_batch(samples, 0)).split(counts_of(samples))]
        else:
            alone = [per_token_losses(model, pad_batch([sample], 0)).sum() for sample in samples]
        packed_losses = per_token_losses(model, as_one_row(batch) if layout == "one row" else batch)
    # Split the packed per-token losses back into samples, in row order then sample order.
    order = []
    for row in rows:
        starts = [i for i, position in enumerate(row.meta[POSITION_IDS]) if position == 0]
        order += [next(s for s in samples if s.input_ids == row.input_ids[a : a + len(s.input_ids)]
                       and len(row.input_ids) >= a + len(s.input_ids)) for a in starts]
    packed = [chunk.sum() for chunk in packed_losses.split(counts_of(order))]
    expected = [alone[next(i for i, s in enumerate(samples) if s is sample)] for sample in order]
    return torch.stack(packed), torch.stack(expected)


@pytest.mark.parametrize("layout", ["rows", "one row"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_per_sample_loss_with_packing_equals_without(attention, layout):
    packed, unpacked = packed_and_unpacked_losses(tiny_llama(attention), layout)
    torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=0)


def test_flex_attention_per_sample_loss_with_packing_equals_without(monkeypatch):
    """FlexAttention's document mask, built by transformers from the position_ids. transformers compiles
    flex_attention with inductor, which took over 10 minutes on the 2-core CI machine; here dynamo traces it into
    its own eager backend instead (the same masks and scores, no kernel generated), one layer, and the unpacked
    samples go as one padded batch, so few shapes are traced."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as hf_flex

    traced = torch.compile(flex_attention, backend="eager", fullgraph=True)
    monkeypatch.setattr(hf_flex.WrappedFlexAttention, "__call__", lambda self: traced)
    model = tiny_llama("flex_attention", layers=1)
    for layout in ("rows", "one row"):
        packed, unpacked = packed_and_unpacked_losses(model, layout, alone_in_one_batch=True)
        torch.testing.assert_close(packed, unpacked, rtol=1e-5, atol=0)


def test_without_position_restart_samples_would_see_each_other():
    """The check above can fail: the same rows without their position_ids give other losses."""
    model = tiny_llama("sdpa")
    rows = pack_samples(random_samples(12, seed=1), 96)
    batch = pad_batch(rows, 0)
    with torch.no_grad():
        packed = per_token_losses(model, batch)
        leaking = per_token_losses(model, {key: value for key, value in batch.items() if key != "position_ids"})
    assert not torch.allclose(packed, leaking, rtol=1e-5)


def test_flash_attention_gets_a_packed_batch_as_one_row_and_others_keep_rows():
    from types import SimpleNamespace

    batch = pad_batch(pack_samples(random_samples(12, seed=1), 96), 0)
    rows, width = batch["input_ids"].shape
    for attention in ("flash_attention_2", "flash_attention_3", "sdpa", "eager", "flex_attention"):
        inputs = model_inputs(batch, SimpleNamespace(_attn_implementation=attention))
        assert "attention_mask" not in inputs  # the positions carry the sample boundaries
        flat = flattens_packed_rows(attention)
        assert flat == attention.startswith("flash")
        assert inputs["input_ids"].shape == ((1, rows * width) if flat else (rows, width))
        assert inputs["position_ids"].reshape(rows, width).equal(batch["position_ids"])
        assert inputs["input_ids"].reshape(rows, width).equal(batch["input_ids"])
    padded = pad_batch(random_samples(3), 0)  # unpacked batches keep their rows and their mask
    assert model_inputs(padded, SimpleNamespace(_attn_implementation="flash_attention_2"))["input_ids"].shape == \
        padded["input_ids"].shape
