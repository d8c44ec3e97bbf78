"""BLEU-4 and ROUGE-1/2/L against values worked out by hand in the comments (not by running the code)."""

import math

import pytest

from tunesmith.eval.metrics import bleu4, corpus_scores, rouge_l, rouge_n, text_scores, tokenize

# English, split into words:
#   hyp: the cat sat on the mat   (6 words)      ref: the cat is on the mat   (6 words)
#   1-grams: clipped matches the x2, cat, on, mat = 5 of 6            p1 = 5/6
#   2-grams: (the cat) (on the) (the mat) match, of 5 in hyp          p2 = 3/5
#   3-grams: (on the mat) matches, of 4                               p3 = 1/4
#   4-grams: none of 3 match -> first zero, smoothed 1 / (2^1 * 3)    p4 = 1/6
#   BP: c = r = 6 -> exp(1 - 6/6) = 1
#   BLEU-4 = 100 * (5/6 * 3/5 * 1/4 * 1/6) ** (1/4) = 100 * (1/48) ** 0.25 = 37.99...
#   ROUGE-1: overlap 5, P = R = 5/6 -> F = 5/6;  ROUGE-2: overlap 3 of 5 and 5 -> F = 3/5
#   ROUGE-L: LCS = the cat on the mat = 5 -> F = 5/6
EN_HYP, EN_REF = "the cat sat on the mat", "the cat is on the mat"
EN_EXPECTED = {"bleu-4": 100 * (1 / 48) ** 0.25, "rouge-1": 100 * 5 / 6, "rouge-2": 60.0, "rouge-l": 100 * 5 / 6}

# Chinese, segmented by jieba:
#   hyp: 我 / 爱 / 北京   (3 words)       ref: 我 / 爱 / 北京 / 天安门   (4 words)
#   p1 = 3/3, p2 = 2/2, p3 = 1/1; no 4-gram in a 3-word hyp -> first zero, 1 / (2^1 * 1) = 1/2
#   BP: c = 3 < r = 4 -> exp(1 - 4/3) = exp(-1/3)
#   BLEU-4 = 100 * exp(-1/3) * (1/2) ** (1/4) = 60.25...
#   ROUGE-1: P = 3/3, R = 3/4 -> F = 2 * 0.75 / 1.75 = 6/7;  ROUGE-2: P = 2/2, R = 2/3 -> F = 0.8
#   ROUGE-L: LCS = 3 -> F = 6/7
ZH_HYP, ZH_REF = "我爱北京", "我爱北京天安门"
ZH_EXPECTED = {"bleu-4": 100 * math.exp(-1 / 3) * 0.5**0.25, "rouge-1": 600 / 7, "rouge-2": 80.0,
               "rouge-l": 600 / 7}


def test_english_is_split_into_words_and_punctuation():
    assert tokenize("Hello, world!") == ["Hello", ",", "world", "!"]
    assert tokenize(EN_HYP) == ["the", "cat", "sat", "on", "the", "mat"]


def test_chinese_is_segmented_with_jieba():
    assert tokenize(ZH_HYP) == ["我", "爱", "北京"]
    assert tokenize(ZH_REF) == ["我", "爱", "北京", "天安门"]


@pytest.mark.parametrize("hyp, ref, expected", [(EN_HYP, EN_REF, EN_EXPECTED), (ZH_HYP, ZH_REF, ZH_EXPECTED)])
def test_scores_match_hand_computation(hyp, ref, expected):
    assert text_scores(hyp, ref) == pytest.approx(expected, abs=1e-9)


def test_corpus_score_is_the_mean_of_sample_scores():
    scores = corpus_scores([EN_HYP, ZH_HYP], [EN_REF, ZH_REF])
    for key in EN_EXPECTED:
        assert scores[key] == pytest.approx((EN_EXPECTED[key] + ZH_EXPECTED[key]) / 2, abs=1e-4)


def test_identical_texts_score_100_and_disjoint_ones_0():
    words = "a b c d e".split()
    assert bleu4(words, words) == pytest.approx(100)
    assert rouge_n(words, words, 2) == pytest.approx(100) and rouge_l(words, words) == pytest.approx(100)
    assert bleu4(["x", "y"], words) == 0 and rouge_n(["x", "y"], words, 1) == 0 and rouge_l(["x"], words) == 0
    assert text_scores("", "some reference") == {"bleu-4": 0, "rouge-1": 0, "rouge-2": 0, "rouge-l": 0}


def test_short_hypothesis_pays_the_brevity_penalty():
    # hyp "a b c d" against ref "a b c d e f": every n-gram matches (p1..p4 = 1), BP = exp(1 - 6/4)
    assert bleu4(list("abcd"), list("abcdef")) == pytest.approx(100 * math.exp(-0.5))
