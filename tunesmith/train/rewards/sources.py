"""Where reward functions come from: a built-in name, `path/to/file.py:function` (the user's own code, run by
`tunesmith train` only), or a finished rm run folder. Every name is resolved, and a file's code loaded,
before the model loads, so a typo fails in seconds."""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError
from tunesmith.train.rewards import builtin

BUILTINS = ("accuracy", "format", "length")


@dataclass
class RewardFunction:
    name: str  # as the config names it; metrics are logged under reward/<name>
    function: Callable
    weight: float
    columns: tuple[str, ...] = ()  # dataset columns it needs (checked before the model loads)


def build_rewards(grpo, max_new_tokens: int, scorer_loader: Callable | None = None) -> list[RewardFunction]:
    """The reward functions `grpo.reward_funcs` names, with `grpo.reward_weights` (default 1 each).
    `scorer_loader(folder)` turns an rm run folder into a reward function (needs the policy's tokenizer)."""
    weights = grpo.reward_weights or [1.0] * len(grpo.reward_funcs)
    return [_resolve(name, grpo, max_new_tokens, scorer_loader, weight)
            for name, weight in zip(grpo.reward_funcs, weights)]


def needed_columns(rewards: list[RewardFunction]) -> dict[str, list[str]]:
    """column -> the reward functions that need it."""
    needs: dict[str, list[str]] = {}
    for reward in rewards:
        for column in reward.columns:
            needs.setdefault(column, []).append(reward.name)
    return needs


def _resolve(name: str, grpo, max_new_tokens: int, scorer_loader, weight: float) -> RewardFunction:
    if name == "accuracy":
        return RewardFunction(name, builtin.accuracy, weight, ("answer",))
    if name == "format":
        return RewardFunction(name, builtin.format_reward(grpo.format_pattern), weight)
    if name == "length":
        return RewardFunction(name, builtin.length_reward(max_new_tokens, grpo.overlong_buffer), weight)
    if ".py:" in name:
        function = load_user_function(name)
        return RewardFunction(name, function, weight, _required_columns(function))
    if Path(name).is_dir():
        if scorer_loader is None:
            raise TunesmithError(f"reward {name}: an rm run folder can score only where the policy's tokenizer is "
                                 "known (stage grpo)")
        return RewardFunction(name, scorer_loader(Path(name)), weight)
    raise TunesmithError(
        f"stage.reward_funcs: unknown reward {name!r}; use a built-in ({', '.join(BUILTINS)}), "
        "'path/to/file.py:function' for your own, or the folder of a finished rm run"
    )


def load_user_function(spec: str) -> Callable:
    """The function `name` of the Python file `path`, from 'path:name'. This runs the file's code."""
    path_text, _, function_name = spec.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise TunesmithError(f"reward {spec!r}: file {path} does not exist; give 'path/to/file.py:function' "
                             "relative to the folder you run tunesmith in, or an absolute path")
    module_spec = importlib.util.spec_from_file_location(f"tunesmith_user_reward_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise TunesmithError(f"reward {spec!r}: importing {path} failed: {type(err).__name__}: {err}") from err
    function = getattr(module, function_name, None)
    if not callable(function):
        defined = ", ".join(n for n, v in vars(module).items() if inspect.isfunction(v)) or "none"
        raise TunesmithError(f"reward {spec!r}: {path} has no function {function_name!r} (functions: {defined})")
    return function


def _required_columns(function: Callable) -> tuple[str, ...]:
    """The keyword parameters a user's function takes without a default, beyond prompts and completions:
    the dataset columns it cannot run without."""
    parameters = list(inspect.signature(function).parameters.values())[2:]
    return tuple(p.name for p in parameters if p.default is p.empty
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "completion_ids")
