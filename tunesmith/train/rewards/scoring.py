"""Run the reward functions on a batch of completions and check what they return.

Anything a function does wrong (raises, returns the wrong number of values, NaN, infinity or a non-number)
stops the run with an error naming the function and the sample, at the step it happens: for a bad function
that is the first step, before anything of the step is logged or saved.
"""

from __future__ import annotations

import math
import numbers

import torch

from tunesmith.errors import TunesmithError


def score_completions(rewards, prompts: list, completions: list[str], columns: dict[str, list]
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(weighted sum of the rewards [n] (NaN where no function scored a completion), each function's raw
    rewards [n] (NaN where it returned None)), in float64."""
    per_function = {}
    for reward in rewards:
        values = _call(reward, prompts, completions, columns)
        per_function[reward.name] = torch.tensor([math.nan if v is None else float(v) for v in values],
                                                 dtype=torch.float64)
    stacked = torch.stack(list(per_function.values()), dim=1)
    weights = torch.tensor([reward.weight for reward in rewards], dtype=torch.float64)
    total = (stacked * weights).nansum(dim=1)
    total[stacked.isnan().all(dim=1)] = math.nan
    return total, per_function


def _call(reward, prompts, completions, columns) -> list:
    try:
        values = reward.function(prompts, completions, **columns)
    except Exception as err:
        sample = _first_failing_sample(reward, prompts, completions, columns)
        raise TunesmithError(f"reward function {reward.name} raised {type(err).__name__}: {err}"
                             f"{sample}; fix the function or the data") from err
    if not isinstance(values, (list, tuple)) or len(values) != len(completions):
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise TunesmithError(f"reward function {reward.name} returned {got} for {len(completions)} completions; "
                             "it must return a list with one float (or None) per completion")
    for index, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise TunesmithError(f"reward function {reward.name} returned {value!r} for sample {index} "
                                 f"({_describe(prompts[index], completions[index])}); return a finite float, "
                                 "or None to leave a completion unscored")
    return list(values)


def _first_failing_sample(reward, prompts, completions, columns) -> str:
    """' on sample i (...)' for the first completion the function fails on alone, when one does."""
    for index in range(len(completions)):
        one = {key: values[index:index + 1] for key, values in columns.items()}
        try:
            reward.function(prompts[index:index + 1], completions[index:index + 1], **one)
        except Exception:
            return f" on sample {index} ({_describe(prompts[index], completions[index])})"
    return ""


def _describe(prompt, completion: str) -> str:
    text = prompt[-1]["content"] if isinstance(prompt, list) and prompt else str(prompt)
    return f"prompt {text[:60]!r}, completion {completion[:60]!r}"
