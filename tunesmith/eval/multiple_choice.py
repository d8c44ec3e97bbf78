"""Score a multiple-choice benchmark: k-shot prompts from dev, the most likely answer letter, accuracy."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from tunesmith.errors import TunesmithError
from tunesmith.eval.benchmark import LETTERS, Benchmark, Question, Subject
from tunesmith.eval.prompts import fitting_prompt, letter_token_ids, prompt_style
from tunesmith.eval.scoring import length_sorted_batches, next_token_logprobs

DEFAULT_SPLIT = {"mmlu": "test", "ceval": "val", "cmmlu": "test"}
DEFAULT_LANG = {"mmlu": "en", "ceval": "zh", "cmmlu": "zh"}


@dataclass
class Item:
    subject: Subject
    question: Question
    prompt: list[int]
    predicted: str = ""


def evaluate_benchmark(engine, task: str, folder: str, split: str = "auto", shots: int = 5, lang: str = "auto",
                       batch_size: int = 8, max_samples: int | None = None) -> dict:
    """Accuracy per subject, per category and overall, with the settings that produced it."""
    split = DEFAULT_SPLIT[task] if split == "auto" else split
    lang = DEFAULT_LANG[task] if lang == "auto" else lang
    started = time.perf_counter()
    benchmark = Benchmark(folder, lang)
    items = _items(engine, benchmark, split, shots, lang, max_samples)
    _predict(engine, items, batch_size)
    results = summarize(items)
    results.update(task=task, split=split, shots=shots, lang=lang, seconds=round(time.perf_counter() - started, 2))
    return results


def _items(engine, benchmark: Benchmark, split: str, shots: int, lang: str, max_samples: int | None) -> list[Item]:
    if not benchmark.has_split(split):
        raise TunesmithError(f"{benchmark.root} has no '{split}' split; choose another with --split / eval.split")
    style = prompt_style(lang)
    items = []
    for subject in tqdm(benchmark.subjects, desc="building prompts", unit="subject", leave=False):
        examples = benchmark.questions(subject, "dev")[:shots] if shots else []
        for question in benchmark.questions(subject, split)[:max_samples]:
            if not question.answer:
                raise TunesmithError(
                    f"{benchmark.root}: the '{split}' split of {subject.key} has no answers (C-Eval hides its test "
                    "answers); score the val split instead (--split val)"
                )
            prompt = fitting_prompt(engine.template, question, examples, subject.name, style, engine.max_context)
            items.append(Item(subject, question, prompt))
    return items


def _predict(engine, items: list[Item], batch_size: int) -> None:
    letters = letter_token_ids(engine.tokenizer)
    batches = length_sorted_batches([len(item.prompt) for item in items], batch_size)
    for batch in tqdm(batches, desc="scoring", unit="batch"):
        logprobs = next_token_logprobs(engine.model, [items[i].prompt for i in batch], letters,
                                       engine.tokenizer.pad_token_id)
        for row, index in enumerate(batch):
            items[index].predicted = LETTERS[int(logprobs[row].argmax())]


def summarize(items: list[Item]) -> dict:
    subjects: dict[str, dict] = {}
    categories: dict[str, dict] = {}
    for item in items:
        entry = subjects.setdefault(item.subject.key, {"name": item.subject.name, "category": item.subject.category,
                                                       "correct": 0, "total": 0})
        category = categories.setdefault(item.subject.category, {"correct": 0, "total": 0})
        hit = int(item.predicted == item.question.answer)
        for counts in (entry, category):
            counts["correct"] += hit
            counts["total"] += 1
    overall = {"correct": sum(c["correct"] for c in subjects.values()), "total": len(items)}
    for counts in [*subjects.values(), *categories.values(), overall]:
        counts["accuracy"] = counts["correct"] / counts["total"] if counts["total"] else 0.0
    return {"overall": overall, "categories": dict(sorted(categories.items())), "subjects": subjects}
