"""Checkpoint contents, pruning and safe loading; resume lookup; NEFTune; options that need a validation split."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import tiny_run_config

from tunesmith.config.load import validate_config
from tunesmith.errors import TunesmithError
from tunesmith.train.checkpoint import (
    OPTIMIZER_FILE,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def _setup(model_dir, data_dir, tmp_path, method):
    from tunesmith.model.load import load_model
    from tunesmith.model.methods import apply_method
    from tunesmith.train.optim import build_optimizer, build_scheduler

    config = validate_config(tiny_run_config(model_dir, data_dir, tmp_path, method=method))
    model = apply_method(load_model(config.model), config.method)
    optimizer = build_optimizer(model, config.train)
    return model, optimizer, build_scheduler(optimizer, config.train, 10)


def _trained(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _take_a_step(model, optimizer, scheduler):
    loss = sum((p.float() ** 2).sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("method", [{"kind": "lora", "rank": 4, "alpha": 8}, {"kind": "full"}])
def test_checkpoint_restores_weights_optimizer_and_schedule(tiny_model_dir, identity_dir, tmp_path, method):
    model, optimizer, scheduler = _setup(tiny_model_dir, identity_dir, tmp_path, method)
    _take_a_step(model, optimizer, scheduler)
    folder = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"stream_position": 3})
    weights, moments, lr = _trained(model), optimizer.state_dict(), optimizer.param_groups[0]["lr"]

    fresh, fresh_optimizer, fresh_scheduler = _setup(tiny_model_dir, identity_dir, tmp_path, method)
    state = load_checkpoint(folder, fresh, fresh_optimizer, fresh_scheduler)
    assert state == {"step": 1, "stream_position": 3}
    restored = _trained(fresh)
    assert restored.keys() == weights.keys()
    assert all(restored[name].equal(weights[name]) for name in weights)
    assert fresh_optimizer.param_groups[0]["lr"] == lr
    for index, values in moments["state"].items():
        assert fresh_optimizer.state_dict()["state"][index]["exp_avg"].equal(values["exp_avg"])


def test_save_total_limit_keeps_the_newest_and_lists_only_complete_ones(tiny_model_dir, identity_dir, tmp_path):
    model, optimizer, scheduler = _setup(tiny_model_dir, identity_dir, tmp_path, {"kind": "lora"})
    (tmp_path / ".checkpoint-9.tmp").mkdir()  # a save that was killed half way
    (tmp_path / "checkpoint-7").mkdir()  # no trainer_state.json: not complete
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    assert find_resume_checkpoint(tmp_path, "auto").name == "checkpoint-4"
    assert find_resume_checkpoint(tmp_path / "empty", "auto") is None
    assert find_resume_checkpoint(tmp_path, None) is None
    with pytest.raises(TunesmithError, match="not a complete checkpoint"):
        find_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-7"))


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_refuses_pickled_objects(tiny_model_dir, identity_dir, tmp_path):
    model, optimizer, scheduler = _setup(tiny_model_dir, identity_dir, tmp_path, {"kind": "lora"})
    folder = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
    torch.save({"state": _Payload()}, folder / OPTIMIZER_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(folder, model, optimizer, scheduler)


def test_neftune_noise_is_bounded_and_only_in_training(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunesmith.train.noise import add_neftune_noise

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    embeddings = model.get_input_embeddings()
    ids = torch.randint(0, 100, (2, 10))
    clean = embeddings(ids)
    handle = add_neftune_noise(model, alpha=5.0)
    bound = 5.0 / (10 * clean.size(-1)) ** 0.5  # alpha / sqrt(length * hidden)
    model.train()
    noise = embeddings(ids) - clean
    assert 0 < noise.abs().max() <= bound
    assert noise.abs().mean() > bound / 4  # uniform on [-bound, bound] has mean |x| of bound / 2
    model.eval()
    assert embeddings(ids).equal(clean)
    handle.remove()


@pytest.mark.parametrize("option", [{"scheduler": "reduce_lr_on_plateau"}, {"early_stopping_patience": 2}])
def test_eval_driven_options_need_a_validation_split(tiny_model_dir, identity_dir, tmp_path, option):
    raw = tiny_run_config(tiny_model_dir, identity_dir, tmp_path, train=option)
    with pytest.raises(TunesmithError, match="data.val_size"):
        validate_config(raw)
    raw["data"]["val_size"] = 0.1
    validate_config(raw)


def test_a_missing_metric_sink_package_is_named(tmp_path):
    import importlib.util

    from tunesmith.train.sinks import build_sinks

    missing = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(name) is None]
    if not missing:
        pytest.skip("every sink package is installed")
    with pytest.raises(TunesmithError, match=f"pip install {missing[0]}"):
        build_sinks([missing[0]], tmp_path, {})
