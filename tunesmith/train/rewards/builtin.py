"""The built-in reward functions. Each takes `(prompts, completions, **columns)` and returns a float (or None:
"not scored") per completion; `columns` hold the dataset's extra columns, one value per completion."""

from __future__ import annotations

import re
from fractions import Fraction

# A number as people write answers: sign, thousands commas, decimals, or a fraction such as 1/2.
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d[\d,]*(?:\.\d+)?)?|-?\.\d+"
_HASHES = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANY_NUMBER = re.compile(_NUMBER)


def final_answer(text: str) -> str | None:
    """The answer a text ends on: after the last `#### `, else in the last `\\boxed{}`, else its last number."""
    for pattern in (_HASHES, _BOXED):
        found = pattern.findall(text)
        if found:
            return found[-1].strip()
    numbers = _ANY_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def as_number(text: str | None) -> Fraction | None:
    """`text` as an exact number when it is one: 1,000 = 1000 = 1000.0 and 0.5 = 1/2; else None."""
    if text is None:
        return None
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(predicted: str | None, reference: str | None) -> bool:
    """Equal as numbers when both read as numbers, else equal as stripped text."""
    if predicted is None or reference is None:
        return False
    left, right = as_number(predicted), as_number(reference)
    if left is not None and right is not None:
        return left == right
    return predicted.strip() == reference.strip()


def accuracy(prompts, completions, answer, **columns) -> list[float]:
    """1.0 when the completion's final answer equals the `answer` column's final answer (GSM8K's `#### n`, a
    `\\boxed{}` or the last number; 1,000 = 1000 = 1000.0, 0.5 = 1/2), else 0.0."""
    return [float(same_answer(final_answer(text), final_answer(str(reference))))
            for text, reference in zip(completions, answer)]


def format_reward(pattern: str):
    """A reward of 1.0 when the whole completion (stripped) matches the regex `pattern` ('.' spans lines)."""
    compiled = re.compile(pattern, re.DOTALL)

    def matches_format(prompts, completions, **columns) -> list[float]:
        return [float(compiled.fullmatch(text.strip()) is not None) for text in completions]

    return matches_format


def length_reward(max_new_tokens: int, buffer: int):
    """DAPO's soft overlong penalty on the completion's token count n, with L = max_new_tokens:
    0 for n <= L - buffer, falling linearly to -1 at n = L, and -1 beyond."""
    start = max_new_tokens - buffer

    def length(prompts, completions, completion_ids, **columns) -> list[float]:
        scores = []
        for ids in completion_ids:
            n = len(ids)
            scores.append(0.0 if n <= start else -1.0 if n > max_new_tokens else (start - n) / buffer)
        return scores

    return length
