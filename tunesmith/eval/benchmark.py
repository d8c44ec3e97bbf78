"""Multiple-choice benchmarks read from a local folder in the MMLU, C-Eval or CMMLU layout.

The layouts differ only in where a subject's CSV file for a split lives and whether it has a header row:
  MMLU    [data/]{split}/{subject}_{split}.csv   no header: question, A, B, C, D, answer
  C-Eval  {split}/{subject}_{split}.csv          header: id, question, A, B, C, D, answer[, explanation]
  CMMLU   {split}/{subject}.csv                  header: (index), Question, A, B, C, D, Answer
  folders {subject}/{split}.csv                  either of the above
Subject names and categories come from the folder's mapping.json ({subject: {name, category}}, LLaMA-Factory's
layout) or subject_mapping.json ({subject: [english name, chinese name, category]}, C-Eval's).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError

LETTERS = ("A", "B", "C", "D")
UNCATEGORIZED = "Uncategorized"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # one of LETTERS; "" where the split hides its answers (C-Eval test)


@dataclass(frozen=True)
class Subject:
    key: str  # the file-name form, e.g. high_school_geography
    name: str  # the form used in prompts, e.g. "high school geography"
    category: str


class Benchmark:
    """The subjects of a benchmark folder and their questions per split."""

    def __init__(self, root: str | Path, lang: str = "en"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise TunesmithError(f"benchmark folder {self.root} does not exist; check --data / eval.benchmark_dir")
        self.base = self.root / "data" if (self.root / "data").is_dir() else self.root
        self.subjects = self._find_subjects(lang)
        if not self.subjects:
            raise TunesmithError(
                f"no benchmark CSV files found in {self.root}; expected dev/val/test folders of "
                "{subject}_{split}.csv or {subject}.csv files, or {subject}/{split}.csv"
            )

    def questions(self, subject: Subject, split: str) -> list[Question]:
        path = self._file(subject.key, split)
        if path is None:
            return []
        return _read_questions(path)

    def has_split(self, split: str) -> bool:
        return any(self._file(subject.key, split) is not None for subject in self.subjects)

    def _file(self, key: str, split: str) -> Path | None:
        for path in (
            self.base / split / f"{key}_{split}.csv",
            self.base / split / f"{key}.csv",
            self.base / key / f"{split}.csv",
        ):
            if path.is_file():
                return path
        return None

    def _find_subjects(self, lang: str) -> list[Subject]:
        keys = set()
        for split in ("dev", "val", "test"):
            for path in (self.base / split).glob("*.csv"):
                keys.add(path.stem.removesuffix(f"_{split}"))
        keys |= {path.parent.name for path in self.base.glob("*/*.csv") if path.parent.name not in ("dev", "val", "test")}
        mapping = _read_mapping(self.root, lang)
        return [mapping.get(key) or Subject(key, key.replace("_", " "), UNCATEGORIZED) for key in sorted(keys)]


def _read_mapping(root: Path, lang: str) -> dict[str, Subject]:
    """Subject names and categories from mapping.json or subject_mapping.json, if the folder has one."""
    for name in ("mapping.json", "subject_mapping.json"):
        path = root / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise TunesmithError(f"{path}: not valid JSON at line {err.lineno} ({err.msg})") from None
            return {key: _subject_from_entry(key, entry, lang, path) for key, entry in raw.items()}
    return {}


def _subject_from_entry(key: str, entry, lang: str, path: Path) -> Subject:
    if isinstance(entry, dict) and "name" in entry:
        return Subject(key, entry["name"], entry.get("category", UNCATEGORIZED))
    if isinstance(entry, list) and len(entry) == 3:
        english, chinese, category = entry
        return Subject(key, chinese if lang == "zh" else english, category)
    raise TunesmithError(
        f"{path}: entry '{key}' must be {{\"name\": ..., \"category\": ...}} or [english, chinese, category]"
    )


def _read_questions(path: Path) -> list[Question]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "question" in header and all(letter.lower() in header for letter in LETTERS):
        return [_from_named(row, header, path, number) for number, row in enumerate(rows[1:], 2)]
    return [_from_positions(row, path, number) for number, row in enumerate(rows, 1)]


def _from_named(row: list[str], header: list[str], path: Path, number: int) -> Question:
    cell = dict(zip(header, row))
    choices = tuple(cell.get(letter.lower(), "").strip() for letter in LETTERS)
    return _question(cell.get("question", ""), choices, cell.get("answer", ""), path, number)


def _from_positions(row: list[str], path: Path, number: int) -> Question:
    if len(row) != 6:
        raise TunesmithError(
            f"{path}: line {number} has {len(row)} columns; a header-less file needs question, A, B, C, D, answer"
        )
    return _question(row[0], tuple(cell.strip() for cell in row[1:5]), row[5], path, number)


def _question(text: str, choices: tuple, answer: str, path: Path, number: int) -> Question:
    answer = answer.strip().upper()
    if answer and answer not in LETTERS:
        raise TunesmithError(f"{path}: line {number}: answer '{answer}' is not one of {', '.join(LETTERS)}")
    return Question(text.strip(), choices, answer)
