"""BLEU-4 and ROUGE-1/2/L between a generated text and its reference, in percent.

Text with Chinese characters is segmented into words with jieba; other text is split into words and
punctuation marks. Scores are per sample; a dataset's score is the mean over its samples.

BLEU-4 (one reference): exp(mean over n = 1..4 of log p_n) * BP, where p_n is the clipped n-gram precision
(matches / hypothesis n-grams) and BP = exp(1 - r / c) when the hypothesis (c words) is shorter than the
reference (r words), else 1. Short texts often match no 4-gram, so zero precisions are smoothed the NIST
way: the k-th zero p_n becomes 1 / (2^k * hypothesis n-grams). A hypothesis that matches no word scores 0.

ROUGE-N is the F1 of n-gram overlap (clipped counts): P = overlap / hypothesis n-grams, R = overlap /
reference n-grams, F = 2PR / (P + R). ROUGE-L is the same F1 with the longest common subsequence as overlap.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    if _CJK.search(text):
        import jieba

        return [token for token in jieba.lcut(text) if token.strip()]
    return _WORD.findall(text)


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu4(hypothesis: list[str], reference: list[str]) -> float:
    if not hypothesis or not reference:
        return 0.0
    log_sum, zeros = 0.0, 0
    for n in range(1, 5):
        hyp, ref = ngrams(hypothesis, n), ngrams(reference, n)
        matches = sum((hyp & ref).values())
        total = max(1, sum(hyp.values()))
        if matches == 0:
            if n == 1:
                return 0.0
            zeros += 1
            log_sum += math.log(1 / (2**zeros * total))
        else:
            log_sum += math.log(matches / total)
    c, r = len(hypothesis), len(reference)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return 100 * brevity * math.exp(log_sum / 4)


def _f1(overlap: int, hyp_count: int, ref_count: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / hyp_count, overlap / ref_count
    return 100 * 2 * precision * recall / (precision + recall)


def rouge_n(hypothesis: list[str], reference: list[str], n: int) -> float:
    hyp, ref = ngrams(hypothesis, n), ngrams(reference, n)
    return _f1(sum((hyp & ref).values()), sum(hyp.values()), sum(ref.values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: list[str], reference: list[str]) -> float:
    return _f1(lcs_length(hypothesis, reference), len(hypothesis), len(reference))


def text_scores(hypothesis: str, reference: str) -> dict[str, float]:
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    return {
        "bleu-4": bleu4(hyp, ref),
        "rouge-1": rouge_n(hyp, ref, 1),
        "rouge-2": rouge_n(hyp, ref, 2),
        "rouge-l": rouge_l(hyp, ref),
    }


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """The mean of each per-sample score, rounded to 4 places."""
    per_sample = [text_scores(hyp, ref) for hyp, ref in zip(hypotheses, references)]
    keys = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
    return {key: round(sum(s[key] for s in per_sample) / max(1, len(per_sample)), 4) for key in keys}
