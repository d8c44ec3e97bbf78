"""Read a run config from YAML plus `dotted.key=value` overrides, and validate it once."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunesmith.config.fields import schema_fields
from tunesmith.config.llamafactory import foreign_key_target
from tunesmith.config.migrate import describe, migrate_saved, old_spellings
from tunesmith.config.schema import RunConfig
from tunesmith.errors import TunesmithError


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), notify=None) -> RunConfig:
    """The validated config in `path` with each `a.b.c=value` override applied on top.

    A LLaMA-Factory training YAML is translated first; `notify` (default: print to stderr) gets the
    equivalent native YAML and every key that was not applied.
    """
    raw = read_run_yaml(path, notify or _print_to_stderr)
    for item in overrides:
        apply_override(raw, item)
    moves = old_spellings(raw)
    if moves:
        raise TunesmithError(f"{path}: keys in the old layout: {describe(moves)}")
    return validate_config(raw, source=str(path))


def load_saved_config(path: str | Path, notify=None) -> RunConfig:
    """The config a run folder was trained with; one saved before method and stage became tagged unions is
    moved to today's spelling, with a one-line note to `notify` (default: stderr)."""
    raw, moved = migrate_saved(read_yaml(path))
    if moved:
        (notify or _print_to_stderr)(f"{path}: saved in an older layout; read with today's key names")
    return validate_config(raw, source=str(path))


def read_run_yaml(path: str | Path, notify) -> dict[str, Any]:
    """The raw native config in `path`, translated when it is a LLaMA-Factory YAML."""
    from tunesmith.config.llamafactory import looks_like_llamafactory, translate

    raw = read_yaml(path)
    if not looks_like_llamafactory(raw):
        return raw
    translation = translate(raw)
    notes = "".join(f"\n  {line}" for line in translation.notes())
    notify(f"{path} is a LLaMA-Factory config; as a tunesmith config it reads:\n"
           f"{yaml.safe_dump(translation.config, sort_keys=False)}{notes}")
    return translation.config


def _print_to_stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"config file not found: {path}; check the path")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise TunesmithError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if raw is None:
        raise TunesmithError(f"{path}: the config is empty; see examples/quickstart.yaml for one that works")
    if not isinstance(raw, dict):
        raise TunesmithError(f"{path}: a config is a mapping of groups (model:, data:, ...), got {type(raw).__name__}")
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in the nested dict; the value is parsed as YAML (so 3 is an int, true a bool)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise TunesmithError(f"override {item!r} is not of the form key.path=value (e.g. train.lr=2e-4)")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TunesmithError(f"override {item!r}: {part} is a value, not a group")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        lines = [_describe(error) for error in err.errors()]
        raise TunesmithError(f"{source}: " + "; ".join(lines)) from None


def _describe(error: dict[str, Any]) -> str:
    loc, kinds = _readable(error["loc"])
    where = "".join(f" under {union}.kind {kind}" for union, kind in kinds.items())
    if error["type"] == "extra_forbidden":
        return f"unknown key '{loc}'{where}{_suggestion(loc, kinds)}"
    if error["type"] == "missing":
        return f"'{loc}' is required{where}; add it to the config"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return f"'{loc}.kind': {error['msg']}"
    return f"'{loc}'{where}: {error['msg']} (got {error.get('input')!r})"


def _readable(loc: tuple) -> tuple[str, dict[str, str]]:
    """The dotted key of an error's location without the union tags pydantic puts in it ('stage.dpo.beta' is
    stage.beta under kind dpo), and {union: kind} for the tags taken out."""
    parts, kinds = [str(part) for part in loc], {}
    tags = {spec.group: spec.choices for spec in schema_fields(RunConfig) if spec.name == "kind"}
    if len(parts) > 1 and parts[1] in tags.get(parts[0], ()):
        kinds[parts[0]] = parts.pop(1)
    return ".".join(parts), kinds


def _suggestion(loc: str, kinds: dict[str, str]) -> str:
    """' (did you mean X?)' from the fields of the group (and kind) that holds the unknown key."""
    group, _, key = loc.rpartition(".")
    specs = [spec for spec in schema_fields(RunConfig) if spec.path.startswith(f"{group}.")]
    elsewhere = [spec for spec in specs if spec.path == loc]
    kind = kinds.get(group.split(".")[0])
    here = [spec for spec in specs if not kind or not spec.kinds or kind in spec.kinds]
    if elsewhere:
        return f" (it is a setting of kind {', '.join(elsewhere[0].kinds)}; kind {kind} has no such setting)"
    names = list(dict.fromkeys(spec.path[len(group) + 1:].split(".")[0] for spec in here))
    # LLaMA-Factory's names are the ones people most often bring (learning_rate for lr, ...).
    alias = foreign_key_target(key).rsplit(".", 1)[-1]
    if alias in names:
        return f" (did you mean '{alias}'?)"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
