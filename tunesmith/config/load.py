"""Read a run config from YAML plus `dotted.key=value` overrides, and validate it once."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunesmith.config.llamafactory import foreign_key_target
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
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{loc}'{_suggestion(error['loc'])}"
    if error["type"] == "missing":
        return f"'{loc}' is required; add it to the config"
    return f"'{loc}': {error['msg']} (got {error.get('input')!r})"


def _suggestion(loc: tuple) -> str:
    """' (did you mean X?)' from the fields of the group that holds the unknown key."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    # LLaMA-Factory's names are the ones people most often bring (learning_rate for lr, ...).
    alias = foreign_key_target(str(loc[-1])).rsplit(".", 1)[-1]
    if alias in model.model_fields:
        return f" (did you mean '{alias}'?)"
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
    known = ", ".join(model.model_fields)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {known})"


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
