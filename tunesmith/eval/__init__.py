"""Evaluation: multiple-choice benchmarks (MMLU / C-Eval / CMMLU layouts), generation metrics
(BLEU-4, ROUGE-1/2/L) and validation loss, all on an `HfEngine`."""
