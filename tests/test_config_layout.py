"""`method` and `stage` are tagged unions on `kind`: each kind takes only its own keys, a key of another kind is
an error naming it, run folders saved in the old nested layout still load, and old keys typed by the user get
their new spelling."""

from __future__ import annotations

import shutil

import pytest
import yaml

from conftest import REPO
from tunesmith.config import dump_config, load_config, load_saved_config, validate_config
from tunesmith.errors import TunesmithError
from tunesmith.run_folder import read_run_config

OLD_RUNS = REPO / "tests" / "fixtures" / "old_run_folders"  # config.yaml files written by the old layout's code
BASE = {"model": {"path": "unused"}, "data": {"datasets": ["identity"]}}


def _error(extra: dict) -> str:
    with pytest.raises(TunesmithError) as caught:
        validate_config({**BASE, **extra})
    return str(caught.value)


def test_a_key_of_another_kind_is_an_error_naming_the_key_and_its_kinds():
    message = _error({"stage": {"kind": "sft", "preference_loss": "ipo"}})
    assert "'stage.preference_loss' under stage.kind sft" in message and "kind dpo" in message
    message = _error({"method": {"kind": "full", "rank": 16}})
    assert "'method.rank' under method.kind full" in message and "lora, qlora" in message


def test_a_misspelt_key_gets_a_suggestion_from_its_own_kind():
    assert "did you mean 'rank'" in _error({"method": {"kind": "lora", "rnak": 16}})
    assert "did you mean 'temperature'" in _error({"stage": {"kind": "grpo", "sampling": {"temprature": 1.0}}})
    assert "'stage.kind'" in _error({"stage": {"kind": "sftt"}}) and "'sft'" in _error({"stage": {"kind": "x"}})


def test_flat_groups_read_as_their_kind_and_dump_only_its_fields():
    config = validate_config({**BASE, "method": {"rank": 16}, "stage": {"kind": "dpo", "preference_loss": "ipo"}})
    assert (config.method.kind, config.method.rank, config.stage.preference_loss) == ("lora", 16, "ipo")
    dumped = yaml.safe_load(dump_config(config))
    assert set(dumped["stage"]) == {"kind", "beta", "preference_loss", "label_smoothing", "simpo_gamma",
                                    "orpo_lambda", "precompute_ref"}
    assert "layers" not in dumped["method"] and validate_config(dumped) == config


def test_each_kind_has_its_own_defaults():
    grpo = validate_config({**BASE, "stage": {"kind": "grpo"}, "train": {"batch_size": 8}}).stage
    dpo = validate_config({**BASE, "stage": {"kind": "dpo"}}).stage
    ppo = validate_config({**BASE, "stage": {"kind": "ppo", "reward_model": "rm"}}).stage
    assert (grpo.beta, dpo.beta) == (0.0, 0.1)  # grpo: no KL term by default; dpo: the paper's beta
    assert (grpo.sampling.max_new_tokens, ppo.sampling.max_new_tokens) == (256, 64)
    # a group given in part keeps its kind's defaults for the rest (eval decodes greedily, seeded)
    partial = validate_config({**BASE, "stage": {"kind": "ppo", "reward_model": "rm", "sampling": {"top_p": 0.9}},
                               "eval": {"task": "predict", "sampling": {"max_new_tokens": 6}}})
    assert partial.stage.sampling.max_new_tokens == 64
    assert (partial.eval.sampling.temperature, partial.eval.sampling.seed) == (0.0, 42)


def test_rollout_sampling_refuses_what_would_move_it_off_the_policy():
    assert "penalties" in _error({"stage": {"kind": "grpo", "sampling": {"repetition_penalty": 1.2}},
                                  "train": {"batch_size": 8}})
    assert "train.seed" in _error({"stage": {"kind": "ppo", "reward_model": "rm", "sampling": {"seed": 1}}})


@pytest.mark.parametrize("name", ["ppo_lora", "grpo_freeze", "dpo_qlora"])
def test_a_run_folder_saved_in_the_old_layout_loads_with_a_one_line_note(name, tmp_path, capsys):
    run = shutil.copytree(OLD_RUNS / name, tmp_path / name)

    config = read_run_config(run)

    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "older layout" in note
    dumped = yaml.safe_load(dump_config(config))
    assert set(dumped["stage"]) == set(type(config.stage).model_fields)  # only the active kind's settings
    assert set(dumped["method"]) == set(type(config.method).model_fields)


def test_old_layout_values_land_on_their_new_keys():
    ppo = load_saved_config(OLD_RUNS / "ppo_lora" / "config.yaml", notify=lambda line: None)
    assert (ppo.method.kind, ppo.method.rank, ppo.method.alpha) == ("lora", 16, 32)
    assert (ppo.stage.reward_model, ppo.stage.epochs) == ("runs/rlhf-rm", 2)
    assert (ppo.stage.sampling.max_new_tokens, ppo.stage.sampling.temperature) == (32, 0.9)
    grpo = load_saved_config(OLD_RUNS / "grpo_freeze" / "config.yaml", notify=lambda line: None)
    assert (grpo.method.kind, grpo.method.layers) == ("freeze", 1)
    # grpo's own beta wins over the old shared stage.beta (dpo's default, saved beside it)
    assert (grpo.stage.beta, grpo.stage.token_averaging, grpo.stage.sampling.max_new_tokens) == (0.04, "dr_grpo", 96)
    assert (grpo.eval.sampling.max_new_tokens, grpo.eval.sampling.temperature, grpo.eval.sampling.seed) == (64, 0.5, 7)
    dpo = load_saved_config(OLD_RUNS / "dpo_qlora" / "config.yaml", notify=lambda line: None)
    assert (dpo.method.kind, dpo.method.rank, dpo.stage.preference_loss, dpo.stage.beta) == ("qlora", 8, "ipo", 0.2)


def test_a_config_saved_in_todays_layout_loads_without_a_note(tmp_path):
    notes = []
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(validate_config({**BASE, "stage": {"kind": "kto"}})))
    assert load_saved_config(path, notify=notes.append).stage.kind == "kto" and notes == []


def test_old_keys_typed_by_the_user_are_an_error_with_the_new_spelling(tmp_path):
    with pytest.raises(TunesmithError, match="stage.ppo.reward_model is now stage.reward_model") as caught:
        load_config(OLD_RUNS / "ppo_lora" / "config.yaml")
    assert "stage.ppo.max_new_tokens is now stage.sampling.max_new_tokens" in str(caught.value)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**BASE, "stage": {"kind": "dpo", "loss": "ipo"}}))
    with pytest.raises(TunesmithError, match="stage.loss is now stage.preference_loss"):
        load_config(path)
    with pytest.raises(TunesmithError, match=r"method.lora.rank is now method.rank"):
        load_config(path, ["stage.loss=sigmoid", "method.lora.rank=4"])


def test_cross_field_checks_live_in_the_config():
    assert "data.packing works for the pt and sft stages only" in _error(
        {"stage": {"kind": "dpo"}, "data": {"datasets": ["x"], "packing": True}})
    assert "data.val_size" in _error({"train": {"early_stopping_patience": 2}})
    assert "stage 3" in _error({"dist": {"engine": "deepspeed", "deepspeed": {"stage": 2, "offload_params": True}}})


def test_the_engine_takes_the_sampling_group_field_for_field():
    """ppo/grpo rollouts and eval hand the sampling group to the engine by name (GenerationSettings(**group))."""
    from dataclasses import fields

    from tunesmith.config.sampling import SamplingConfig
    from tunesmith.infer.settings import GenerationSettings

    assert {item.name for item in fields(GenerationSettings)} - {"stop"} == set(SamplingConfig.model_fields)
