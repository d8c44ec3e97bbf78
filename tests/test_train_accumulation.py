"""Batch 4 x accumulation 1 and batch 1 x accumulation 4 give the same loss and gradients as the naive formula."""

from __future__ import annotations

import torch
from conftest import tiny_run_config

from tunesmith.data.records import Encoded
from tunesmith.data.template import IGNORE


class GradRecorder:
    """Stands in for the optimizer: keeps a copy of the gradients it is asked to apply."""

    def __init__(self, model):
        self.model = model
        self.param_groups = [{"lr": 0.0}]
        self.step_was_skipped = False
        self.grads: dict[str, torch.Tensor] = {}

    def step(self):
        self.grads = {name: p.grad.clone() for name, p in self.model.named_parameters() if p.grad is not None}

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def _samples(vocab: int) -> list[Encoded]:
    """Four samples of very different lengths and target counts, so per-micro-batch means would differ."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for length, prompt in [(7, 3), (30, 5), (12, 10), (21, 1)]:
        ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
        samples.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return samples


def _train_one_step(model_dir, data_dir, tmp_path, samples, batch_size, grad_accum):
    from accelerate import Accelerator

    from tunesmith.config.load import validate_config
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.loop import Trainer
    from tunesmith.train.stages import get_stage

    config = validate_config(tiny_run_config(model_dir, data_dir, tmp_path, method={"kind": "full"},
                                             train={"batch_size": batch_size, "grad_accum": grad_accum,
                                                    "max_grad_norm": None, "precision": "fp32"}))
    stage = get_stage("sft")
    model = apply_method(load_model(config.model), config.method)
    # One epoch is four samples, so either setting's single step covers all of them.
    stream = BatchStream(samples, batch_size, lambda batch: stage.collate(batch, pad_id=0), seed=1)
    trainer = Trainer(Accelerator(cpu=True), model, stage, config.train, stream, [], tmp_path)
    trainer.optimizer = GradRecorder(trainer.model)
    result = trainer.train_step()
    return float(result.loss), trainer.optimizer.grads, model


def _naive(model, samples) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """sum over all target tokens of -log p, divided by the number of target tokens, sample by sample."""
    model.zero_grad()
    total = sum(sum(1 for t in s.labels[1:] if t != IGNORE) for s in samples)
    loss = 0
    for sample in samples:
        logits = model(input_ids=torch.tensor([sample.input_ids])).logits[0, :-1]
        targets = torch.tensor(sample.labels[1:])
        loss = loss + torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
    (loss / total).backward()
    return loss.detach() / total, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_batch_four_equals_four_accumulated_batches_of_one(tiny_model_dir, identity_dir, tmp_path):
    from transformers import AutoConfig

    samples = _samples(AutoConfig.from_pretrained(tiny_model_dir).vocab_size)
    loss_a, grads_a, model = _train_one_step(tiny_model_dir, identity_dir, tmp_path / "a", samples, 4, 1)
    loss_b, grads_b, _ = _train_one_step(tiny_model_dir, identity_dir, tmp_path / "b", samples, 1, 4)
    naive_loss, naive_grads = _naive(model, samples)

    assert abs(loss_a - float(naive_loss)) < 1e-5
    assert abs(loss_b - float(naive_loss)) < 1e-5
    assert grads_a.keys() == grads_b.keys() and grads_a
    # float32 rounding: the fused head's input gradient is its per-token gradient times the upstream factor,
    # the naive one (softmax - onehot) times the factor, then the weight; elements near zero differ by ~2e-7
    for name, grad in naive_grads.items():
        torch.testing.assert_close(grads_a[name], grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6)
