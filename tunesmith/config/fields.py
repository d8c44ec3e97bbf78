"""The config schema as a flat list of typed fields: the one walker behind the web UI's forms, the
command-line flags, the LLaMA-Factory translation, did-you-mean suggestions and the list of path fields (a
field added to the schema appears in all of them).

A tagged union (`method`, `stage`) is walked kind by kind: each of its fields is listed once, with the kinds
that have it (`FieldSpec.kinds`) and each kind's default (`kind_defaults`)."""

from __future__ import annotations

import dataclasses
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
    kinds: tuple[str, ...] = ()  # in a tagged union: the kinds that have this field; () for every config
    kind_defaults: tuple[tuple[str, Any], ...] = ()  # in a tagged union: (kind, its default) for each kind
    metadata: tuple = ()  # the field's markers (e.g. config/path_marker.PathField)

    @property
    def group(self) -> str:
        return self.path.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]

    @property
    def union(self) -> str:
        """The tagged union this field belongs to ('stage' for stage.beta); '' outside unions."""
        return self.path.split(".", 1)[0] if self.kinds else ""

    def default_for(self, kind: str) -> Any:
        return dict(self.kind_defaults).get(kind, self.default)


def schema_fields(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> list[FieldSpec]:
    """Every leaf field of `model`, depth first, in definition order. `defaults`: an instance whose values
    are the defaults (a nested group made by a default factory, e.g. eval's sampling settings)."""
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation, optional = _strip_optional(info.annotation)
        default = getattr(defaults, name) if defaults is not None else _default(info)
        members = union_members(annotation)
        if members:
            specs += _union_fields(members, f"{path}.", default)
        elif _is_group(annotation):
            specs += schema_fields(annotation, f"{path}.", default if isinstance(default, BaseModel) else None)
        else:
            kind, choices = _classify(annotation)
            specs.append(FieldSpec(path, kind, default, info.description or "", choices, optional,
                                   info.is_required(), metadata=tuple(info.metadata)))
    return specs


def _union_fields(members: dict[str, type[BaseModel]], prefix: str, default: BaseModel) -> list[FieldSpec]:
    """The fields of a tagged union: `kind` (a choice of the tags), then each field once, with its kinds."""
    tag = FieldSpec(f"{prefix}kind", "choice", default.kind, _kinds_help(members), tuple(members))
    merged: dict[str, FieldSpec] = {}
    for kind, member in members.items():
        for spec in schema_fields(member, prefix, member.model_construct()):
            if spec.path == tag.path:
                continue
            seen = merged.get(spec.path)
            kinds = (seen.kinds if seen else ()) + (kind,)
            kind_defaults = (seen.kind_defaults if seen else ()) + ((kind, spec.default),)
            merged[spec.path] = dataclasses.replace(seen or spec, kinds=kinds, kind_defaults=kind_defaults)
    return [tag, *merged.values()]


def _kinds_help(members: dict[str, type[BaseModel]]) -> str:
    return "; ".join(f"{kind}: {member.model_fields['kind'].description}" for kind, member in members.items())


def union_members(annotation) -> dict[str, type[BaseModel]]:
    """{kind: group} of a tagged union of groups; {} for anything else."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    args = typing.get_args(annotation)
    if not all(_is_group(arg) and "kind" in arg.model_fields for arg in args):
        return {}
    return {arg.model_fields["kind"].default: arg for arg in args}


def _is_group(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def field_specs(model: type[BaseModel], path: str) -> list[FieldSpec]:
    """The fields at `path` (a leaf) or under it (a group); [] when the schema has no such field."""
    return [spec for spec in schema_fields(model) if spec.path == path or spec.path.startswith(f"{path}.")]


def dataclass_fields(cls, prefix: str = "") -> list[FieldSpec]:
    """Form fields for a settings dataclass (e.g. the engine's GenerationSettings), typed from its hints."""
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
