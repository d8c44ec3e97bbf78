"""What an evaluation logs: the stage's mean loss and its own metrics, checked against the stage's loss taken one
sample at a time; perplexity only for token stages, whose loss is a per-token cross entropy."""

from __future__ import annotations

import pytest
import torch

from stage_harness import assistant, build, user
from tunesmith.data.records import Conversation, KtoExample, Preference
from tunesmith.eval.loss import evaluate_loss
from tunesmith.train.metrics import read_metrics

TOPICS = ["the sea", "a cat", "green tea", "the moon", "music", "rain"]


def records(kind: str) -> list:
    if kind == "sft":
        return [Conversation([user(f"Tell me about {topic}."), assistant(f"{topic} is nice.")]) for topic in TOPICS]
    if kind == "kto":
        return [KtoExample([user(f"And {topic}?")], assistant("good" if i % 2 else "bad"), desirable=bool(i % 2))
                for i, topic in enumerate(TOPICS)]
    return [Preference([user(f"What of {topic}?")], assistant("wonderful"), assistant("bad bad, awful"))
            for topic in TOPICS]


@torch.no_grad()
def one_at_a_time(stage, model, samples) -> dict[str, float]:
    """The reference: the stage's summed loss and extras, one sample per forward pass, divided by all units."""
    model.eval()
    sums, units = {}, 0
    for sample in samples:
        batch = stage.collate([sample], 0)
        units += stage.count_units(batch)
        loss, extras = stage.loss(model, batch)
        for key, value in {"loss": loss, **extras}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {key: value / units for key, value in sums.items()}


@pytest.mark.parametrize("kind", ["rm", "dpo", "kto", "sft"])
def test_trainer_eval_logs_the_stage_metrics_and_perplexity_only_for_token_stages(tiny_model_dir, tmp_path, kind):
    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, records(kind), {"kind": kind}, batch_size=4)
    trainer.val = data.train  # 6 samples in batches of 4: a full and a partial batch
    eval_loss = trainer.evaluate()
    (logged,) = [record for record in read_metrics(tmp_path / "run") if "eval_loss" in record]

    expected = one_at_a_time(stage, trainer.model, data.train)
    assert eval_loss == logged["eval_loss"] == pytest.approx(expected.pop("loss"), rel=1e-5)
    assert expected or kind == "sft", "a preference stage reports metrics of its own"
    for key, value in expected.items():
        assert logged[f"eval_{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert ("perplexity" in logged) == (kind == "sft")
    if kind == "sft":
        assert logged["perplexity"] == pytest.approx(torch.tensor(eval_loss).exp().item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["rm", "dpo", "sft"])
def test_evaluate_loss_reports_the_stage_metrics_and_perplexity_only_for_token_stages(tiny_model_dir, tmp_path,
                                                                                      kind):
    stage, trainer, data, _, _ = build(tiny_model_dir, tmp_path, records(kind), {"kind": kind})
    results = evaluate_loss(trainer.model, stage, data.train, 0, batch_size=4)

    expected = one_at_a_time(stage, trainer.model, data.train)
    assert set(expected) | {"tokens", "samples", "seconds"} <= set(results)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    assert ("perplexity" in results) == (kind == "sft")
