"""LR schedules match transformers' own and the textbook formulas; plateau and early stopping follow eval_loss."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_run_config

from tunesmith.config.schema import SchedulerName, TrainConfig
from tunesmith.train.metrics import read_metrics
from tunesmith.train.optim import build_scheduler

TOTAL = 20
PER_STEP = [name for name in SchedulerName.__args__ if name != "reduce_lr_on_plateau"]


def _lrs(scheduler, optimizer, steps=TOTAL) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _optimizer(lr=1e-3):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("name", PER_STEP)
@pytest.mark.parametrize("warmup", [{"warmup_ratio": 0.12}, {"warmup_steps": 5, "warmup_ratio": 0.5}])
def test_schedule_matches_transformers(name, warmup):
    from transformers import get_scheduler

    train = TrainConfig(scheduler=name, lr=1e-3, **warmup)
    expected_warmup = warmup.get("warmup_steps", math.ceil(warmup["warmup_ratio"] * TOTAL))  # ratio: 3 steps
    ours, theirs = _optimizer(), _optimizer()
    expected = _lrs(get_scheduler(name, theirs, num_warmup_steps=expected_warmup, num_training_steps=TOTAL), theirs)
    assert _lrs(build_scheduler(ours, train, TOTAL), ours) == expected


def test_linear_and_cosine_follow_their_formulas():
    peak, warm = 1e-3, 4
    linear = _lrs(build_scheduler(o := _optimizer(), TrainConfig(scheduler="linear", warmup_steps=warm), TOTAL), o)
    cosine = _lrs(build_scheduler(o := _optimizer(), TrainConfig(scheduler="cosine", warmup_steps=warm), TOTAL), o)
    for step in range(TOTAL):
        if step < warm:
            want_linear = want_cosine = peak * step / warm
        else:
            progress = (step - warm) / (TOTAL - warm)
            want_linear = peak * (1 - progress)
            want_cosine = peak * 0.5 * (1 + math.cos(math.pi * progress))
        assert linear[step] == pytest.approx(want_linear, abs=1e-12)
        assert cosine[step] == pytest.approx(want_cosine, abs=1e-12)


def _trainer(model_dir, data_dir, out_dir, **train):
    from accelerate import Accelerator

    from tunesmith.config.load import validate_config
    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.template import ChatTemplate
    from tunesmith.model.load import load_model, load_tokenizer
    from tunesmith.model.methods import apply_method
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.loop import Trainer
    from tunesmith.train.stages import get_stage

    config = validate_config(tiny_run_config(model_dir, data_dir, out_dir, train=train, data={"val_size": 4}))
    out_dir.mkdir(parents=True, exist_ok=True)
    stage, tokenizer = get_stage("sft"), load_tokenizer(config.model)
    template = ChatTemplate(tokenizer, "auto")
    data = prepare_data(config.data, lambda records: stage.encode_many(records, template, config.data),
                        "conversation", 0)
    stream = BatchStream(data.train, 4, lambda b: stage.collate(b, tokenizer.pad_token_id), seed=0)
    model = apply_method(load_model(config.model), config.method)
    return Trainer(Accelerator(cpu=True), model, stage, config.train, stream, data.val, out_dir)


def test_logged_lr_is_the_rate_each_step_used(tiny_model_dir, identity_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, identity_dir, tmp_path, scheduler="linear", warmup_steps=2, max_steps=5)
    trainer.run()
    logged = [r["lr"] for r in read_metrics(tmp_path) if "lr" in r]
    assert logged == pytest.approx([0.0, 5e-4, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3])  # warm up 2, then down over 3


def test_plateau_lowers_lr_only_after_evaluations_stop_improving(tiny_model_dir, identity_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, identity_dir, tmp_path, scheduler="reduce_lr_on_plateau", max_steps=3)
    trainer.run()  # training steps never move a plateau schedule
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    patience = trainer.scheduler.patience
    trainer.evaluate = lambda: 1.0  # the same eval_loss over and over: no improvement
    for _ in range(patience + 1):
        trainer.evaluate_and_check()
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    trainer.evaluate_and_check()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_early_stopping_ends_the_run_after_patience_evaluations(tiny_model_dir, identity_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, identity_dir, tmp_path, max_steps=50, eval_steps=1,
                       early_stopping_patience=2)
    losses = iter([3.0, 2.0, 2.5, 2.1, 1.0])  # best 2.0 at step 2, then two evaluations without improvement
    trainer.evaluate = lambda: next(losses)
    trainer.run()
    assert trainer.step == 4
    assert trainer.best_eval_loss == 2.0
