"""Reward functions: the built-ins on hand-written cases, a user's file, and every way a function can fail."""

from __future__ import annotations

import math

import pytest

from tunesmith.config.stage_kinds import GrpoStageConfig
from tunesmith.errors import TunesmithError
from tunesmith.train.rewards import build_rewards, needed_columns, score_completions
from tunesmith.train.rewards.builtin import accuracy, final_answer, format_reward, length_reward

PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.mark.parametrize("completion, reference, expected", [
    ("so the answer is\n#### 1,000", "work...\n#### 1000", 1.0),
    ("The total is \\boxed{1000.0}.", "#### 1000", 1.0),
    ("She has 3 apples, then 0.5 of a pie", "#### 1/2", 1.0),
    ("first 12, then 7 and finally 18 dollars", "Janet...\n#### 18", 1.0),
    ("#### 17", "#### 18", 0.0),
    ("I do not know", "#### 18", 0.0),
    ("#### -3", "#### -3", 1.0),
    ("#### $42", "#### 42", 1.0),
])
def test_accuracy_compares_final_answers_as_numbers(completion, reference, expected):
    assert accuracy([PROMPT], [completion], answer=[reference]) == [expected]


def test_final_answer_prefers_hashes_then_boxed_then_last_number():
    assert final_answer("3 then \\boxed{4} then #### 5 and 6") == "5"
    assert final_answer("3 then \\boxed{4} and 6") == "4"
    assert final_answer("3 then 6.") == "6"
    assert final_answer("no digits") is None


def test_format_matches_the_whole_completion():
    reward = format_reward(GrpoStageConfig().format_pattern)
    texts = ["We add.\n#### 4", "#### 4 is the answer", "4", "Steps\nmore steps\n####  1,234"]
    assert reward([PROMPT] * 4, texts) == [1.0, 0.0, 0.0, 1.0]
    think = format_reward(r"<think>.*</think>\s*<answer>.*</answer>")
    assert think([PROMPT] * 2, ["<think>a\nb</think>\n<answer>4</answer>", "<answer>4</answer>"]) == [1.0, 0.0]


def test_length_is_dapos_soft_overlong_penalty():
    reward = length_reward(max_new_tokens=10, buffer=4)
    ids = [[0] * n for n in (3, 6, 7, 8, 10, 11)]
    # n <= 6: 0; 6 < n <= 10: (6 - n) / 4; n > 10: -1
    assert reward([PROMPT] * 6, [""] * 6, completion_ids=ids) == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]


def grpo(**settings):
    return GrpoStageConfig(**settings)


def test_weights_and_sum(tmp_path):
    rewards = build_rewards(grpo(reward_funcs=["accuracy", "format"], reward_weights=[2.0, 0.5]), 16)
    total, per_function = score_completions(rewards, [PROMPT] * 2, ["#### 4", "5"],
                                            {"answer": ["#### 4", "#### 4"], "completion_ids": [[1], [2]]})
    assert per_function["accuracy"].tolist() == [1.0, 0.0]
    assert per_function["format"].tolist() == [1.0, 0.0]
    assert total.tolist() == [2.5, 0.0]
    assert needed_columns(rewards) == {"answer": ["accuracy"]}


def write_user_rewards(folder):
    path = folder / "my_rewards.py"
    path.write_text(
        "def shortness(prompts, completions, **columns):\n"
        "    return [1.0 / (1 + len(c)) for c in completions]\n"
        "def explode(prompts, completions, **columns):\n"
        "    return [1 / len(c) for c in completions]\n"
        "def too_few(prompts, completions, **columns):\n"
        "    return [1.0]\n"
        "def not_a_number(prompts, completions, **columns):\n"
        "    return [float('nan') if 'bad' in c else 1.0 for c in completions]\n"
        "def skips(prompts, completions, **columns):\n"
        "    return [None for c in completions]\n"
        "def wants_solution(prompts, completions, solution, **columns):\n"
        "    return [1.0 for c in completions]\n"
    )
    return path


def score_with(spec, completions):
    rewards = build_rewards(grpo(reward_funcs=[spec]), 16)
    ids = [[1] * len(text) for text in completions]
    return score_completions(rewards, [PROMPT] * len(completions), completions, {"completion_ids": ids})


def test_a_users_function_from_its_file(tmp_path):
    path = write_user_rewards(tmp_path)
    total, _ = score_with(f"{path}:shortness", ["ab", "abc"])
    assert total.tolist() == [1 / 3, 1 / 4]
    rewards = build_rewards(grpo(reward_funcs=[f"{path}:wants_solution"]), 16)
    assert needed_columns(rewards) == {"solution": [f"{path}:wants_solution"]}


def test_none_leaves_a_completion_unscored(tmp_path):
    total, per_function = score_with(f"{write_user_rewards(tmp_path)}:skips", ["a"])
    assert math.isnan(total[0]) and math.isnan(per_function[f"{tmp_path / 'my_rewards.py'}:skips"][0])


@pytest.mark.parametrize("function, completions, message", [
    ("explode", ["ab", "", "c"], r"explode raised ZeroDivisionError.*sample 1 \(prompt 'What is 2 \+ 2\?', completion ''\)"),
    ("too_few", ["a", "b"], r"too_few returned 1 values for 2 completions"),
    ("not_a_number", ["ok", "bad one"], r"not_a_number returned nan for sample 1 .*completion 'bad one'"),
])
def test_a_failing_function_is_named_with_the_sample(tmp_path, function, completions, message):
    path = write_user_rewards(tmp_path)
    with pytest.raises(TunesmithError, match=message):
        score_with(f"{path}:{function}", completions)


@pytest.mark.parametrize("spec, message", [
    ("missing/rewards.py:f", r"file missing/rewards.py does not exist"),
    ("{folder}/my_rewards.py:nope", r"has no function 'nope' \(functions: shortness, explode"),
    ("acuracy", r"unknown reward 'acuracy'; use a built-in \(accuracy, format, length\)"),
])
def test_a_reward_that_cannot_be_found_is_a_clear_error(tmp_path, spec, message):
    write_user_rewards(tmp_path)
    with pytest.raises(TunesmithError, match=message):
        build_rewards(grpo(reward_funcs=[spec.format(folder=tmp_path)]), 16)


def test_weights_must_match_functions():
    with pytest.raises(ValueError, match="2 weights for 1 reward_funcs"):
        GrpoStageConfig(reward_funcs=["accuracy"], reward_weights=[1.0, 2.0])


def test_reading_a_config_never_runs_its_reward_code(tmp_path):
    """chat, export, eval and the web UI read a run folder's config.yaml: naming a reward file there runs nothing."""
    from tunesmith.config import dump_config, load_config
    from tunesmith.config.load import validate_config

    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndef f(p, c, **k):\n    return [0.0]\n")
    raw = {"model": {"path": "m"}, "data": {"datasets": ["d"]}, "train": {"batch_size": 8},
           "stage": {"kind": "grpo", "reward_funcs": [f"{tmp_path}/evil.py:f"]}}
    (tmp_path / "config.yaml").write_text(dump_config(validate_config(raw)))
    assert load_config(tmp_path / "config.yaml").stage.reward_funcs == [f"{tmp_path}/evil.py:f"]
    assert not marker.exists()


def test_the_web_ui_passes_built_in_rewards_and_refuses_reward_code():
    from tunesmith.webui.tool_actions import reward_flags

    assert reward_flags(["accuracy", "format"]) == ["--rewards", "accuracy", "format"]
    with pytest.raises(TunesmithError, match="the web UI does not run reward code"):
        reward_flags(["accuracy", "mine.py:score"])


def test_the_web_ui_never_trains_with_reward_code(tmp_path):
    from types import SimpleNamespace

    from tunesmith.config.load import validate_config
    from tunesmith.webui.train_actions import start_training

    raw = {"model": {"path": "m"}, "data": {"datasets": ["d"]},
           "train": {"batch_size": 8, "output_dir": str(tmp_path / "run")},
           "stage": {"kind": "grpo", "reward_funcs": ["accuracy", f"{tmp_path}/mine.py:score"]}}
    with pytest.raises(TunesmithError, match="the web UI does not run reward code"):
        start_training(SimpleNamespace(), validate_config(raw))
    assert not (tmp_path / "run").exists()
