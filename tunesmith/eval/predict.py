"""`predict`: generate a reply to each sample's prompt and score it against the sample's own reply."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from tunesmith.errors import TunesmithError
from tunesmith.eval.metrics import corpus_scores
from tunesmith.eval.scoring import length_sorted_batches
from tunesmith.infer.settings import GenerationSettings

PREDICTIONS_FILE = "generated_predictions.jsonl"


def prompt_and_reference(conversation) -> tuple[list[dict], str]:
    """The conversation up to its last assistant turn, and that turn's text."""
    messages = conversation.messages
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise TunesmithError("predict needs conversations with an assistant reply to compare against")
    return messages[:last], messages[last]["content"]


def reward_means(rewards: list, pairs: list, predictions: list[str], tokenizer) -> dict[str, float]:
    """reward/NAME: each function's mean over the replies it scored; the reference reply is the `answer`."""
    import torch

    from tunesmith.train.rewards import score_completions

    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in predictions]
    columns = {"answer": [reference for _, reference in pairs], "completion_ids": ids}
    _, per_function = score_completions(rewards, [messages for messages, _ in pairs], predictions, columns)
    return {f"reward/{name}": float(torch.nanmean(values)) for name, values in per_function.items()}


def evaluate_predictions(engine, conversations: list, batch_size: int = 8, settings: GenerationSettings | None = None,
                         out_dir: Path | None = None, rewards: list = ()) -> dict:
    """BLEU-4 / ROUGE of the generated replies, and the mean of each reward function over them; with out_dir,
    writes generated_predictions.jsonl there."""
    started = time.perf_counter()
    pairs = [prompt_and_reference(conversation) for conversation in conversations]
    lengths = [engine.count_tokens(messages) for messages, _ in pairs]
    settings = settings or GenerationSettings(max_new_tokens=128, temperature=0.0)
    predictions = [""] * len(pairs)
    for batch in tqdm(length_sorted_batches(lengths, batch_size), desc="generating", unit="batch"):
        replies = engine.generate_batch([pairs[i][0] for i in batch], settings)
        for index, reply in zip(batch, replies):
            predictions[index] = reply.strip()
    references = [reference for _, reference in pairs]
    results = {"metrics": corpus_scores(predictions, references), "samples": len(pairs)}
    if rewards:
        results["metrics"].update(reward_means(rewards, pairs, predictions, engine.tokenizer))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
            for (messages, reference), prediction in zip(pairs, predictions):
                row = {"prompt": engine.template.render(messages, add_generation_prompt=True),
                       "predict": prediction, "label": reference}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    results["seconds"] = round(time.perf_counter() - started, 2)
    return results
