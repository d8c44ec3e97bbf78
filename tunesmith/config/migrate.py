"""Configs in the layout before `method` and `stage` became tagged unions (method.lora.rank, stage.ppo.*,
stage.grpo.*, stage.loss, eval.temperature): a run folder's saved config is moved to today's spelling; a
config the user typed in the old layout is an error that gives the new spelling of each key."""

from __future__ import annotations

import copy
from typing import Any

from tunesmith.config.paths import set_path

SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p")  # now in the shared sampling group
STAGE_RENAMES = {"loss": "preference_loss", "loss_type": "token_averaging"}  # distinct names in a flat stage
METHOD_GROUPS = {"lora": ("lora", "qlora"), "freeze": ("freeze",)}  # old nested group -> the kinds it served
STAGE_GROUPS = ("ppo", "grpo")


def old_spellings(raw: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(old key, new key, the kind that has it) for every key of `raw` in the old layout."""
    return _migrate(raw)[1]


def migrate_saved(raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`raw` (a saved run config) in today's layout, keeping only the active kinds' settings (old configs
    saved every kind's); whether anything moved."""
    new, moves = _migrate(raw)
    if not moves:
        return raw, False
    from tunesmith.config.fields import schema_fields
    from tunesmith.config.schema import RunConfig

    for union in ("method", "stage"):
        group = new.get(union)
        if isinstance(group, dict):
            kind = group.get("kind", "lora" if union == "method" else "sft")
            keep = {spec.path.split(".")[1] for spec in schema_fields(RunConfig) if spec.union == union
                    and kind in spec.kinds} | {"kind"}
            new[union] = {key: value for key, value in group.items() if key in keep}
    return new, True


def describe(moves: list[tuple[str, str, str]]) -> str:
    return "; ".join(f"{old} is now {new}" + (f" (a setting of kind {kind})" if kind else "")
                     for old, new, kind in moves)


def _migrate(raw: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    new, moves = copy.deepcopy(raw), []
    if isinstance(raw.get("method"), dict):
        new["method"], found = _method(raw["method"])
        moves += found
    if isinstance(raw.get("stage"), dict):
        new["stage"], found = _stage(raw["stage"])
        moves += found
    if isinstance(raw.get("eval"), dict):
        new["eval"], found = _eval(raw["eval"])
        moves += found
    return new, moves


def _method(method: dict) -> tuple[dict, list]:
    kind = method.get("kind", "lora")
    new = {key: value for key, value in method.items() if key not in METHOD_GROUPS}
    moves = []
    for group, kinds in METHOD_GROUPS.items():
        for key, value in (method.get(group) or {}).items():
            moves.append((f"method.{group}.{key}", f"method.{key}", "" if kind in kinds else "/".join(kinds)))
            if kind in kinds:
                new[key] = value
    return new, moves


def _stage(stage: dict) -> tuple[dict, list]:
    kind = stage.get("kind", "sft")
    new, moves = {}, []
    for key, value in stage.items():
        if key in STAGE_GROUPS:
            continue
        if key in STAGE_RENAMES:
            moves.append((f"stage.{key}", f"stage.{STAGE_RENAMES[key]}", "" if kind == "dpo" else "dpo"))
        new[STAGE_RENAMES.get(key, key)] = value
    for group in STAGE_GROUPS:
        for key, value in (stage.get(group) or {}).items():
            target = f"sampling.{key}" if key in SAMPLING_KEYS else STAGE_RENAMES.get(key, key)
            moves.append((f"stage.{group}.{key}", f"stage.{target}", "" if kind == group else group))
            if kind == group:  # the kind's own group wins over the old shared keys (grpo's beta over dpo's)
                set_path(new, target, value)
    return new, moves


def _eval(options: dict) -> tuple[dict, list]:
    new, moves = dict(options), []
    for key in (*SAMPLING_KEYS, "seed"):
        if key in options:
            moves.append((f"eval.{key}", f"eval.sampling.{key}", ""))
            set_path(new, f"sampling.{key}", new.pop(key))
    return new, moves
