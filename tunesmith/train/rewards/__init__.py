"""Reward functions for online stages: built-ins, a user's own Python function, a finished rm run folder.

A reward function is `(prompts, completions, **columns) -> list[float | None]`: `prompts` are the prompts'
messages, `completions` the generated texts, `columns` the dataset's extra columns (e.g. `answer`) and
`completion_ids`, each one value per completion. None means "not scored" (left out of the statistics).
"""

from tunesmith.train.rewards.sources import RewardFunction, build_rewards, needed_columns
from tunesmith.train.rewards.scoring import score_completions

__all__ = ["RewardFunction", "build_rewards", "needed_columns", "score_completions"]
