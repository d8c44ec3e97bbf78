"""A reward-model run resumed from a checkpoint continues the same trajectory as an uninterrupted one, and the
resumed run's final folder loads back as PPO's scorer, scoring exactly as the uninterrupted run's does."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_run_config

from tunesmith.train.metrics import read_metrics

STEPS, SAVE_AT = 6, 3
METHODS = {
    # LoRA dropout draws random numbers every step, so RNG restoration is exercised too.
    "lora": {"kind": "lora", "rank": 4, "alpha": 8, "dropout": 0.1},
    "full": {"kind": "full"},
}


@pytest.fixture
def pairs_dir(tmp_path):
    """Short preference pairs in LLaMA-Factory's sharegpt ranking format (its demo set's replies are long)."""
    topics = ["the sea", "a cat", "green tea", "the moon", "music", "rain", "bread", "a bike", "maths", "snow"]
    pairs = [{"conversations": [{"from": "human", "value": f"What do you think of {topic}?"}],
              "chosen": {"from": "gpt", "value": f"{topic} is wonderful, I love it"},
              "rejected": {"from": "gpt", "value": f"{topic}? awful, bad bad bad"}} for topic in topics * 2]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    info = {"pairs": {"file_name": "pairs.json", "ranking": True, "formatting": "sharegpt",
                      "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path


def _rm_config(model_dir, data_dir, out_dir, method: dict, **train) -> dict:
    return tiny_run_config(model_dir, data_dir, out_dir, stage={"kind": "rm"}, method=method,
                           data={"datasets": ["pairs"], "val_size": 4, "cache": False},
                           train={"max_steps": STEPS, "batch_size": 2, "lr": 3e-3, "scheduler": "cosine",
                                  "warmup_steps": 1, "save_steps": SAVE_AT, "eval_steps": 2, "precision": "fp32",
                                  **train})


def _train(raw: dict):
    from tunesmith.config.load import validate_config
    from tunesmith.train.run import train

    return train(validate_config(raw))


def _trajectory(run_dir, after_step: int) -> list[dict]:
    """Every logged record past `after_step`, timing left out (the only field that may differ)."""
    return [{key: value for key, value in record.items() if key != "tokens_per_s"}
            for record in read_metrics(run_dir) if record["step"] > after_step]


@pytest.mark.parametrize("method", list(METHODS))
def test_rm_run_resumed_from_a_checkpoint_matches_an_uninterrupted_run(tiny_model_dir, pairs_dir, tmp_path, method):
    from safetensors.torch import load_file

    from tunesmith.model.value_head import VALUE_HEAD_FILE

    straight = _train(_rm_config(tiny_model_dir, pairs_dir, tmp_path / "straight", METHODS[method]))
    checkpoint = straight / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / VALUE_HEAD_FILE).is_file()
    resumed = _train(_rm_config(tiny_model_dir, pairs_dir, tmp_path / "resumed", METHODS[method],
                                resume=str(checkpoint)))

    expected = _trajectory(straight, SAVE_AT)
    assert [r["step"] for r in expected if "loss" in r] == list(range(SAVE_AT + 1, STEPS + 1))
    assert _trajectory(resumed, SAVE_AT) == expected  # exact float equality: losses, accuracy, eval metrics
    evals = [r for r in expected if "eval_loss" in r]
    assert evals and all("eval_accuracy" in r and "perplexity" not in r for r in evals)
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    for file in (weights, VALUE_HEAD_FILE):
        want, got = load_file(straight / file), load_file(resumed / file)
        assert want.keys() == got.keys()
        for name, tensor in want.items():
            assert tensor.equal(got[name]), f"{file}: {name}"


def test_resumed_rm_run_loads_as_ppo_reward_scorer(tiny_model_dir, pairs_dir, tmp_path):
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import load_tokenizer
    from tunesmith.train.stages.ppo import load_reward_scorer

    straight = _train(_rm_config(tiny_model_dir, pairs_dir, tmp_path / "straight", METHODS["lora"]))
    resumed = _train(_rm_config(tiny_model_dir, pairs_dir, tmp_path / "resumed", METHODS["lora"],
                                resume=str(straight / f"checkpoint-{SAVE_AT}")))
    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    prompts = [([{"role": "user", "content": "What is the capital of France?"}], None)] * 2
    replies = tokenizer(["Paris.", "I do not know, sorry."], padding=True, return_tensors="pt")
    scores = [load_reward_scorer(run, tokenizer, "cpu")(prompts, replies["input_ids"], replies["attention_mask"])
              for run in (straight, resumed)]
    torch.testing.assert_close(scores[1], scores[0], rtol=0, atol=0)
