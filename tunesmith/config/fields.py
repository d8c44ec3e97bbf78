"""The config schema as a flat list of typed fields: the one walker behind the web UI's forms and the
command-line flags generated from the schema (a field added to the schema appears in both)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# How a value is typed (in a form, on the command line). "yaml" is the fallback for lists, dicts and unions: typed as YAML text.
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
        specs.append(FieldSpec(f"{prefix}{item.name}", kind, default, item.metadata.get("description", ""), choices,
                               optional))
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
