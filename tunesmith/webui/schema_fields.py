"""Form values <-> config values, for the fields the schema walker (config/fields.py) lists.

The web UI never keeps its own list of settings: every field it shows comes from walking `RunConfig`, so a
field added to the schema appears in the page with its type, default, choices and description.
"""

from __future__ import annotations

from typing import Any

import yaml

from tunesmith.config.fields import FieldSpec, dataclass_fields, schema_fields  # noqa: F401  (the page's imports)
from tunesmith.config.paths import set_path
from tunesmith.errors import TunesmithError

def to_form_value(spec: FieldSpec, value: Any) -> Any:
    """What the form widget shows for a config value."""
    if spec.kind == "yaml":
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    # Empty boxes mean None: a text box, an optional number (typed as text) or an optional choice.
    if value is None and (spec.kind == "text" or spec.optional):
        return ""
    if spec.optional and spec.kind in ("int", "float"):
        return str(value)
    return value


def from_form_value(spec: FieldSpec, value: Any) -> tuple[bool, Any]:
    """(present, config value) for a widget's value; absent means "leave it to the schema's default"."""
    empty = value is None or (isinstance(value, str) and not value.strip())
    if spec.kind == "choices":
        return True, list(value or [])
    if empty:
        if spec.optional:
            return True, None
        return False, None
    if spec.kind in ("int", "float"):
        return True, _number(spec, value)
    if spec.kind == "yaml":
        if not isinstance(value, str):  # a widget that already gives structured values (a multi-select)
            return True, value
        try:
            return True, yaml.safe_load(value)
        except yaml.YAMLError:
            raise TunesmithError(
                f"{spec.path}: {value!r} is not valid YAML; write a list as [a, b] and a mapping as {{k: v}}"
            ) from None
    return True, value


def _number(spec: FieldSpec, value: Any) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TunesmithError(f"{spec.path}: {value!r} is not a number; type one (e.g. {spec.default or 1})") from None
    if spec.kind == "float":
        return number
    if number != int(number):
        raise TunesmithError(f"{spec.path}: {value} is not a whole number; type an integer")
    return int(number)


def chosen_kinds(specs: list[FieldSpec], values: dict[str, Any]) -> dict[str, str]:
    """{union: kind} that form `values` (or, where absent, the schema's defaults) choose, e.g. {'stage': 'dpo'}."""
    unions = {spec.union for spec in specs if spec.union}
    return {spec.group: values.get(spec.path, spec.default) for spec in specs
            if spec.group in unions and spec.name == "kind"}


def applies(spec: FieldSpec, kinds: dict[str, str]) -> bool:
    """Whether the field exists under the chosen kind of its union (fields outside unions always do)."""
    return not spec.union or kinds.get(spec.union) in spec.kinds


def build_raw_config(specs: list[FieldSpec], values: dict[str, Any]) -> dict:
    """The nested config dict for form `values` keyed by dotted path (fields left empty, and fields of kinds
    not chosen, are left out)."""
    raw: dict = {}
    kinds = chosen_kinds(specs, values)
    for spec in specs:
        if spec.path not in values or not applies(spec, kinds):
            continue
        present, value = from_form_value(spec, values[spec.path])
        if present:
            set_path(raw, spec.path, value)
    return raw
