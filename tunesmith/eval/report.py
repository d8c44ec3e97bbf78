"""Results as a readable table, and saving them (JSON plus the table beside it)."""

from __future__ import annotations

import json
from pathlib import Path


def benchmark_table(results: dict) -> str:
    header = f"{results['task']} ({results['split']} split, {results['shots']}-shot, {results['lang']} prompts)"
    width = max([len(key) for key in results["subjects"]] + [len(key) for key in results["categories"]] + [24])
    lines = [header, f"{'subject':<{width}}  {'category':<16}  {'correct':>9}  {'accuracy':>8}"]
    for key, entry in results["subjects"].items():
        lines.append(_row(key, entry, width, entry["category"]))
    lines.append("")
    for key, entry in results["categories"].items():
        lines.append(_row(key, entry, width, "(category)"))
    lines.append(_row("overall", results["overall"], width, ""))
    return "\n".join(lines)


def _row(name: str, entry: dict, width: int, category: str) -> str:
    counts = f"{entry['correct']}/{entry['total']}"
    return f"{name:<{width}}  {category:<16}  {counts:>9}  {100 * entry['accuracy']:>7.2f}%"


def metrics_table(title: str, metrics: dict) -> str:
    width = max(len(key) for key in metrics)
    return "\n".join([title] + [f"{key:<{width}}  {value:>10.4f}" for key, value in metrics.items()])


def save_results(results: dict, table: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".txt").write_text(table + "\n", encoding="utf-8")
