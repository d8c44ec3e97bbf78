"""PPO on the tiny model: a scripted reward rises; a reward model saved by the rm stage loads as the scorer;
every method runs two steps."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter

import pytest
import torch

from conftest import build_tiny_model
from stage_harness import assistant, build, user
from tunesmith.data.records import Conversation
from tunesmith.train.metrics import read_metrics


def prompts(n=8):
    return [Conversation([user(f"Tell me about item {i}."), assistant("unused")]) for i in range(n)]


class TokenCountReward:
    """Scripted reward: the share of reply tokens that are the target token."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, prompts, reply, reply_mask):
        hits = ((reply == self.target).float() * reply_mask).sum(-1)
        return hits / reply_mask.sum(-1).clamp(min=1)


@pytest.fixture(scope="module")
def peaked_model_dir(tmp_path_factory, smollm2_dir):
    """A tiny model with large weights, so that sampling concentrates on a few tokens per context."""
    return build_tiny_model(tmp_path_factory.mktemp("peaked"), smollm2_dir, seed=1, initializer_range=1.0)


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, smollm2_dir):
    """The tiny model with hidden size 64: bitsandbytes' 4-bit blocks need rows of 64 (qlora)."""
    return build_tiny_model(tmp_path_factory.mktemp("wide"), smollm2_dir, hidden_size=64, intermediate_size=128)


def ppo_settings(reward_run, max_new_tokens=6, **ppo):
    return {"kind": "ppo", "reward_model": str(reward_run), "sampling": {"max_new_tokens": max_new_tokens}, **ppo}


def test_ppo_refuses_gradient_accumulation(tiny_model_dir, reward_run, tmp_path):
    from tunesmith.errors import TunesmithError

    with pytest.raises(TunesmithError, match="train.grad_accum: 1"):
        build(tiny_model_dir, tmp_path, prompts(4), ppo_settings(reward_run), grad_accum=2)


def test_scripted_reward_rises(peaked_model_dir, reward_run, tmp_path):
    torch.manual_seed(0)
    same_prompt = [Conversation([user("Tell me a story.")])] * 8
    stage, trainer, _, _, _ = build(peaked_model_dir, tmp_path, same_prompt,
                                    ppo_settings(reward_run, max_new_tokens=3, kl_coef=0.0),
                                    method="lora", max_steps=8, batch_size=8, lr=1e-2)
    first = stage.rollout(trainer.model, trainer.stream.collate(trainer.stream.samples))
    target = Counter(first["reply"].flatten().tolist()).most_common(1)[0][0]
    stage.scorer = TokenCountReward(target)  # replaces the reward model: reward = share of target tokens
    trainer.run()
    rewards = [record["reward"] for record in read_metrics(tmp_path / "run")]
    assert sum(rewards[-3:]) / 3 > rewards[0] + 0.15, rewards  # rewards[0]: replies of the untrained policy


@pytest.mark.parametrize("method", ["lora", "full", "freeze"] + (["qlora"] if importlib.util.find_spec("bitsandbytes") else []))
def test_ppo_trains_two_steps_with_every_method(request, tiny_model_dir, reward_run, tmp_path, method):
    model_dir = request.getfixturevalue("wide_model_dir") if method == "qlora" else tiny_model_dir
    _, trainer, _, _, _ = build(model_dir, tmp_path, prompts(4), ppo_settings(reward_run, epochs=2),
                                method=method)
    trainer.run()
    logged = read_metrics(tmp_path / "run")
    assert [record["step"] for record in logged] == [1, 2]
    for key in ("reward", "kl", "entropy", "value_loss", "policy_loss", "clip_frac"):
        assert math.isfinite(logged[-1][key])
    assert abs(logged[0]["kl"]) < 1e-4  # the first rollout comes from weights equal to the reference


def test_ppo_through_train_scores_with_the_saved_reward_model(tiny_model_dir, reward_run, identity_dir, tmp_path):
    from conftest import tiny_run_config
    from tunesmith.config.load import validate_config
    from tunesmith.train.run import train

    raw = tiny_run_config(tiny_model_dir, identity_dir, tmp_path / "run", stage=ppo_settings(reward_run, epochs=1),
                          data={"max_samples": 4, "cache": False}, train={"max_steps": 2, "batch_size": 2})
    run_dir = train(validate_config(raw))
    logged = read_metrics(run_dir)
    assert [record["step"] for record in logged] == [1, 2]
    assert all(math.isfinite(record["reward"]) for record in logged)
    assert (run_dir / "adapter_config.json").is_file()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_ppo_run_resumed_from_a_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, reward_run, identity_dir,
                                                                       tmp_path, method):
    """Sampling, the running reward normaliser and the value head all continue where the checkpoint left them."""
    from safetensors.torch import load_file

    from conftest import tiny_run_config
    from tunesmith.config.load import validate_config
    from tunesmith.model.value_head import VALUE_HEAD_FILE
    from tunesmith.train.run import train

    def run(name: str, **train_options):
        raw = tiny_run_config(tiny_model_dir, identity_dir, tmp_path / name, method={"kind": method},
                              stage=ppo_settings(reward_run, epochs=2, reward_norm="running"),
                              data={"max_samples": 8, "cache": False},
                              train={"max_steps": 4, "batch_size": 2, "save_steps": 2, **train_options})
        return train(validate_config(raw))

    straight = run("straight")
    resumed = run("resumed", resume=str(straight / "checkpoint-2"))
    after_resume = [[{key: value for key, value in record.items() if key != "tokens_per_s"}
                     for record in read_metrics(folder) if record["step"] > 2] for folder in (straight, resumed)]
    assert [record["step"] for record in after_resume[0]] == [3, 4]
    assert after_resume[1] == after_resume[0]  # exact: rewards, KL, losses
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    for file in (weights, VALUE_HEAD_FILE):
        want, got = load_file(straight / file), load_file(resumed / file)
        assert want.keys() == got.keys() and all(want[name].equal(got[name]) for name in want), file
