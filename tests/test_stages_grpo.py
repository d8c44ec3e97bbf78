"""GRPO on the tiny model through `tunesmith train`: metrics and samples, exact resume, eval and early stopping,
the reference model only when beta > 0, reproducible sampling, and bad input failing before any harm."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import ASSETS, tiny_run_config
from tunesmith.errors import TunesmithError
from tunesmith.train.metrics import read_metrics

GSM8K = ASSETS / "data" / "gsm8k" / "train.jsonl"


@pytest.fixture
def gsm8k_dir(tmp_path):
    """Ten GSM8K problems registered as LLaMA-Factory would: question -> prompt, answer -> response."""
    folder = tmp_path / "data"
    folder.mkdir()
    lines = GSM8K.read_text(encoding="utf-8").splitlines()[:10]
    (folder / "gsm8k.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    entry = {"file_name": "gsm8k.jsonl", "columns": {"prompt": "question", "response": "answer"}}
    (folder / "dataset_info.json").write_text(json.dumps({"gsm8k": entry}))
    return folder


def grpo_config(model_dir, data_dir, out_dir, grpo=None, data=None, method=None, **train):
    settings = {"num_generations": 2, "sampling": {"max_new_tokens": 5},
                "reward_funcs": ["accuracy", "format", "length"], "overlong_buffer": 2, **(grpo or {})}
    return tiny_run_config(model_dir, data_dir, out_dir, stage={"kind": "grpo", **settings},
                           data={"datasets": ["gsm8k"], "cache": False, **(data or {})},
                           train={"max_steps": 2, "batch_size": 4, **train}, **({"method": method} if method else {}))


def run(raw):
    from tunesmith.config.load import validate_config
    from tunesmith.train.run import train

    return train(validate_config(raw))


def test_grpo_logs_rewards_lengths_kl_and_samples(tiny_model_dir, gsm8k_dir, tmp_path):
    run_dir = run(grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "run", grpo={"beta": 0.04}))
    logged = read_metrics(run_dir)
    assert [record["step"] for record in logged] == [1, 2]
    for key in ("loss", "reward", "reward_std", "reward/accuracy", "reward/format_std", "reward/length",
                "frac_reward_zero_std", "completion_length", "completion_length_max", "completion_clipped",
                "kl", "clip_ratio", "entropy"):
        assert math.isfinite(logged[-1][key]), key
    assert 0 < logged[0]["completion_length"] <= 5 and logged[0]["completion_length_max"] <= 5
    assert abs(logged[0]["kl"]) < 1e-6  # the first update starts from weights equal to the reference
    assert logged[0]["clip_ratio"] == 0  # num_iterations 1: the ratio is exactly 1
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [sample["step"] for sample in samples] == [1, 1, 2, 2]
    assert (run_dir / "adapter_config.json").is_file()
    from PIL import Image

    assert Image.open(run_dir / "loss.png").size == (1400, 400)  # loss and reward panels side by side


def test_grpo_resumed_from_a_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, gsm8k_dir, tmp_path):
    """Completions, rewards, old log-probs (num_iterations 2) and losses continue exactly."""
    from safetensors.torch import load_file

    def train_to(name, **options):
        return run(grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / name, grpo={"num_iterations": 2},
                               max_steps=4, save_steps=2, **options))

    straight = train_to("straight")
    resumed = train_to("resumed", resume=str(straight / "checkpoint-2"))
    after = [[{k: v for k, v in record.items() if k != "tokens_per_s"} for record in read_metrics(folder)
              if record["step"] > 2] for folder in (straight, resumed)]
    assert [record["step"] for record in after[0]] == [3, 4]
    assert after[1] == after[0]
    want, got = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert all(want[name].equal(got[name]) for name in want)


def test_eval_is_the_mean_reward_and_early_stopping_maximises_it(tiny_model_dir, gsm8k_dir, tmp_path):
    (tmp_path / "flat.py").write_text("def flat(prompts, completions, **columns):\n"
                                      "    return [0.5 for c in completions]\n")
    raw = grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "run", grpo={"reward_funcs": [f"{tmp_path}/flat.py:flat"]},
                      data={"val_size": 2}, max_steps=6, eval_steps=1, early_stopping_patience=2)
    logged = read_metrics(run(raw))
    evals = [record for record in logged if "eval_reward" in record]
    assert [record["eval_reward"] for record in evals] == [0.5, 0.5, 0.5]  # never better than the first
    assert max(record["step"] for record in logged) == 3  # stopped after two evaluations without improvement


def test_no_reference_model_when_beta_is_zero(tiny_model_dir, tmp_path):
    from stage_harness import assistant, build, user
    from tunesmith.data.records import Conversation

    records = [Conversation([user(f"What is {i} + 1?"), assistant(f"#### {i + 1}")]) for i in range(4)]
    for beta, has_reference in ((0.0, False), (0.1, True)):
        (tmp_path / str(beta)).mkdir()
        stage, *_ = build(tiny_model_dir, tmp_path / str(beta), records,
                          {"kind": "grpo", "num_generations": 2, "beta": beta})
        assert (stage.reference is not None) == has_reference


def test_each_completion_draws_from_its_own_stream(tiny_model_dir):
    """The same prompt index, step and generation give the same completion alone or beside other prompts."""
    from tunesmith.config.stage_kinds import GrpoStageConfig
    from tunesmith.model.load import load_model, load_tokenizer
    from tunesmith.config.schema import ModelConfig
    from tunesmith.train.stages.grpo_rollout import sample_completions

    config = ModelConfig(path=str(tiny_model_dir))
    model, tokenizer = load_model(config).eval(), load_tokenizer(config)
    grpo = GrpoStageConfig(num_generations=3, sampling={"max_new_tokens": 6})
    prompt_a, prompt_b = [1, 2, 3, 4], [5, 6, 7, 8]
    together = sample_completions(model, tokenizer, [prompt_a, prompt_b], [0, 7], grpo, 1, 3, [0])
    alone = sample_completions(model, tokenizer, [prompt_b], [7], grpo, 1, 3, [0])
    assert [r.token_ids for r in together[3:]] == [r.token_ids for r in alone]
    later = sample_completions(model, tokenizer, [prompt_b], [7], grpo, 1, 4, [0])
    assert [r.token_ids for r in later] != [r.token_ids for r in alone]


def test_batch_size_must_hold_whole_groups(tiny_model_dir, gsm8k_dir, tmp_path):
    from pydantic import ValidationError

    from tunesmith.config.load import validate_config

    raw = grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "run", grpo={"num_generations": 4}, batch_size=6)
    with pytest.raises((ValidationError, TunesmithError), match="use train.batch_size 4 or 8"):
        validate_config(raw)


def fail_if_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the bad reward was found")


def test_a_missing_column_fails_before_the_model_loads(tiny_model_dir, gsm8k_dir, tmp_path, monkeypatch):
    import tunesmith.model.load

    (tmp_path / "r.py").write_text("def needs(prompts, completions, solution, **columns):\n    return [0.0]\n")
    monkeypatch.setattr(tunesmith.model.load, "load_model", fail_if_loaded)
    raw = grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "run", grpo={"reward_funcs": [f"{tmp_path}/r.py:needs"]})
    with pytest.raises(TunesmithError, match="needs the column 'solution', which sample 0"):
        run(raw)


def test_a_failing_reward_stops_the_first_step_with_nothing_half_written(tiny_model_dir, gsm8k_dir, tmp_path):
    (tmp_path / "r.py").write_text("def broken(prompts, completions, **columns):\n    return [None, 1.0]\n")
    raw = grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "run", grpo={"reward_funcs": [f"{tmp_path}/r.py:broken"]},
                      save_steps=1)
    with pytest.raises(TunesmithError, match=r"r.py:broken returned 2 values for 4 completions"):
        run(raw)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]
    shutil.rmtree(tmp_path / "run")


def test_two_processes_match_one_with_the_same_global_batch(tiny_model_dir, gsm8k_dir, tmp_path):
    """Each process samples its own prompts' completions, from streams seeded by (seed, step, prompt index,
    generation): the same completions as one process; advantages, the dapo token normaliser and the logged
    statistics are taken over both processes' rows."""
    from test_distributed import assert_same_weights, train_process

    one = grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / "one", grpo={"num_iterations": 2, "beta": 0.04},
                      method={"kind": "full"}, batch_size=8, max_steps=2, lr=1e-4)
    expected = train_process(tmp_path, one)
    two = {**one, "train": {**one["train"], "batch_size": 4, "output_dir": str(tmp_path / "two")}}
    records = train_process(tmp_path, two, "dist.nproc_per_node=2")
    assert [r["step"] for r in records] == [r["step"] for r in expected] == [1, 2]
    for record, reference in zip(records, expected):
        for key in ("reward", "reward/format", "completion_length", "frac_reward_zero_std", "loss", "kl",
                    "clip_ratio", "entropy"):
            assert record[key] == pytest.approx(reference[key], rel=1e-4, abs=2e-5), (record["step"], key)
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_accumulating_matches_one_batch_of_the_same_size(tiny_model_dir, gsm8k_dir, tmp_path):
    """4 prompts in one batch, or 2 batches of 2 accumulated: the same completions, advantages, dapo token
    normaliser, losses and weights."""
    from safetensors.torch import load_file

    def train_with(name, **options):
        return run(grpo_config(tiny_model_dir, gsm8k_dir, tmp_path / name, grpo={"num_iterations": 2}, **options))

    whole = train_with("whole", batch_size=8)
    accumulated = train_with("accumulated", batch_size=4, grad_accum=2)
    for record, reference in zip(read_metrics(accumulated), read_metrics(whole)):
        for key in ("reward", "completion_length", "loss", "clip_ratio", "entropy"):
            assert record[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), (record["step"], key)
    want, got = load_file(whole / "adapter_model.safetensors"), load_file(accumulated / "adapter_model.safetensors")
    assert all(torch_close(want[name], got[name]) for name in want)


def torch_close(a, b) -> bool:
    return bool(a.allclose(b, rtol=1e-4, atol=1e-6))


def test_an_rm_run_folder_is_a_reward(tiny_model_dir, reward_run, tmp_path):
    """It scores each completion rendered after its prompt, whatever the completions beside it."""
    from stage_harness import assistant, build, user
    from tunesmith.data.records import Conversation

    records = [Conversation([user(f"Say something about {i}."), assistant("ok")]) for i in range(4)]
    settings = {"num_generations": 2, "sampling": {"max_new_tokens": 4}, "reward_funcs": [str(reward_run)]}
    stage, trainer, *_ = build(tiny_model_dir, tmp_path, records, {"kind": "grpo", **settings})
    trainer.run()
    logged = read_metrics(tmp_path / "run")
    assert all(math.isfinite(record[f"reward/{reward_run}"]) for record in logged)
    (reward,) = stage.rewards
    prompts = [[user("Hi")], [user("Hi")]]
    ids = [stage.template.tokenizer("Hello there", add_special_tokens=False)["input_ids"], [42, 43]]
    texts = [stage.template.tokenizer.decode(i) for i in ids]
    both = reward.function(prompts, texts, completion_ids=ids)
    alone = reward.function(prompts[1:], texts[1:], completion_ids=ids[1:])  # padding beside a longer one: no effect
    assert both[1] == pytest.approx(alone[0], abs=1e-5) and both[0] != both[1]


def test_resuming_cuts_the_samples_later_steps_wrote(tmp_path):
    from tunesmith.config.stage_kinds import GrpoStageConfig
    from tunesmith.train.stages.grpo import GrpoStage

    stage = GrpoStage(GrpoStageConfig())
    stage.samples_path = tmp_path / "samples.jsonl"
    stage.samples_path.write_text('{"step": 1}\n{"step": 2}\n')
    at_checkpoint = stage.state_dict()
    with stage.samples_path.open("a") as file:
        file.write('{"step": 3}\n')
    stage.load_state_dict(at_checkpoint)
    assert stage.samples_path.read_text() == '{"step": 1}\n{"step": 2}\n'
