"""predict (batched, left-padded generation + BLEU/ROUGE) and validation loss, against unbatched peers."""

import json
import math

import pytest
import torch

from tests.conftest import build_tiny_model
from tunesmith.cli import main
from tunesmith.eval.metrics import corpus_scores
from tunesmith.eval.predict import PREDICTIONS_FILE
from tunesmith.infer.loader import load_engine


@pytest.fixture(scope="module")
def talkative_dir(tmp_path_factory, smollm2_dir):
    """A tiny model with an untied output head: greedy replies vary (the tied one repeats its last token)."""
    return build_tiny_model(tmp_path_factory.mktemp("talkative"), smollm2_dir, seed=1, tie_word_embeddings=False)


def _unbatched_greedy(engine, prompt: list[int], max_new_tokens: int) -> str:
    with torch.no_grad():
        ids = torch.tensor([prompt])
        output = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                       do_sample=False, eos_token_id=engine.template.stop_token_ids(),
                                       pad_token_id=engine.tokenizer.pad_token_id)
    return engine.tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True).strip()


def test_predict_generates_as_one_prompt_at_a_time_and_scores(talkative_dir, identity_dir, tmp_path):
    out = tmp_path / "predict.json"
    argv = ["eval", "--model", str(talkative_dir), "--task", "predict", "--data", str(identity_dir),
            "--dataset", "identity", "--max-samples", "3", "--batch-size", "2", "--max-new-tokens", "6",
            "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert len(rows) == 3
    engine = load_engine(str(talkative_dir))
    for row in rows:
        assert row["predict"]
        prompt = engine.tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert row["predict"] == _unbatched_greedy(engine, prompt, 6)
    results = json.loads(out.read_text())
    expected = corpus_scores([row["predict"] for row in rows], [row["label"] for row in rows])
    assert results["metrics"] == expected and results["samples"] == 3


def test_loss_is_the_token_weighted_mean_of_per_sample_losses(tiny_model_dir, identity_dir, tmp_path):
    out = tmp_path / "loss.json"
    argv = ["eval", "--model", str(tiny_model_dir), "--task", "loss", "--data", str(identity_dir),
            "--dataset", "identity", "--max-samples", "5", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())

    from tunesmith.data.dataset import load_records
    from tunesmith.config.schema import DataConfig

    engine = load_engine(str(tiny_model_dir))
    records = load_records(DataConfig(datasets=["identity"], dataset_dir=str(identity_dir), max_samples=5))
    total, tokens = 0.0, 0
    for record in records:
        encoded = engine.template.encode(record)
        labels = torch.tensor([encoded.labels])
        with torch.no_grad():  # transformers' own loss: the mean over this sample's shifted target tokens
            loss = engine.model(torch.tensor([encoded.input_ids]), labels=labels).loss
        count = int((labels[:, 1:] != -100).sum())
        total, tokens = total + float(loss) * count, tokens + count
    assert results["tokens"] == tokens and results["samples"] == 5
    assert abs(results["loss"] - total / tokens) < 1e-4
    # Relative, in float64: at a perplexity of ~5e4 float32 alone is off by 2e-2, and a loss within 1e-4 gives
    # a perplexity within 1e-4 of it relatively.
    assert results["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-4)


def test_predict_scores_replies_with_reward_functions(talkative_dir, identity_dir, tmp_path):
    (tmp_path / "chars.py").write_text("def chars(prompts, completions, **columns):\n"
                                       "    return [float(len(text)) for text in completions]\n")
    out = tmp_path / "predict.json"
    argv = ["eval", "--model", str(talkative_dir), "--task", "predict", "--data", str(identity_dir),
            "--dataset", "identity", "--max-samples", "3", "--max-new-tokens", "6", "--out", str(out),
            "--rewards", "accuracy", f"{tmp_path}/chars.py:chars"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    metrics = json.loads(out.read_text())["metrics"]
    from tunesmith.train.rewards.builtin import accuracy

    replies, labels = [row["predict"] for row in rows], [row["label"] for row in rows]
    assert metrics["reward/accuracy"] == pytest.approx(sum(accuracy(None, replies, labels)) / 3)
    assert metrics[f"reward/{tmp_path}/chars.py:chars"] == pytest.approx(sum(map(len, replies)) / 3)
