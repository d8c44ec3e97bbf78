"""The config schema as a flat list of form fields, and the way back from form values to a config dict.

The web UI never keeps its own list of settings: every field it shows comes from walking `RunConfig`, so a
field added to the schema appears in the page with its type, default, choices and description.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunesmith.config.paths import set_path
from tunesmith.errors import TunesmithError

# How a value is typed in the form. "yaml" is the fallback for lists, dicts and unions: typed as YAML text.
KINDS = ("bool", "int", "float", "choice", "choices", "text", "yaml")  # choices: a list of Literal values


@dataclass(frozen=True)
class FieldSpec:
    path: str  # dotted, e.g. "train.lr"
    kind: str  # one of KINDS
    default: Any
    description: str
    choices: tuple = ()
    optional: bool = False  # None is a valid value (an empty box means None)
    required: bool = False  # no default: the user must fill it in

    @property
    def group(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]


def schema_fields(model: type[BaseModel], prefix: str = "") -> list[FieldSpec]:
    """Every leaf field of `model`, depth first, in definition order."""
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation, optional = _strip_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            specs += schema_fields(annotation, prefix=f"{path}.")
            continue
        kind, choices = _classify(annotation)
        specs.append(FieldSpec(path, kind, _default(info), info.description or "", choices, optional,
                               info.is_required()))
    return specs


def dataclass_fields(cls, prefix: str = "") -> list[FieldSpec]:
    """Form fields for a settings dataclass (e.g. the engine's GenerationSettings), typed from its hints."""
    import dataclasses

    hints = typing.get_type_hints(cls)
    specs = []
    for item in dataclasses.fields(cls):
        annotation, optional = _strip_optional(hints[item.name])
        kind, choices = _classify(annotation)
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        specs.append(FieldSpec(f"{prefix}{item.name}", kind, default, "", choices, optional))
    return specs


def _strip_optional(annotation) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return annotation, False


def _classify(annotation) -> tuple[str, tuple]:
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "text", ()
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        if typing.get_origin(item) is typing.Literal:
            return "choices", typing.get_args(item)
    return "yaml", ()


def _default(info) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()
    return None


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


def build_raw_config(specs: list[FieldSpec], values: dict[str, Any]) -> dict:
    """The nested config dict for form `values` keyed by dotted path (fields left empty are left out)."""
    raw: dict = {}
    for spec in specs:
        if spec.path not in values:
            continue
        present, value = from_form_value(spec, values[spec.path])
        if present:
            set_path(raw, spec.path, value)
    return raw
