"""Command-line flags generated from the config schema (config/fields.py): each field of a group becomes
`--field-name` with the field's description as help, its default shown, its choices enforced. Commands never
type a setting's name, help or default again, so the flags and the YAML keys cannot drift apart.

A flag left out parses as None, so a command can tell "not given" from "given the default" and layer the
flags over a config file. The flags are added only once their subcommand parses (CommandParser), so
`tunesmith --help` never imports the schema.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.config.fields import FieldSpec


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that adds its deferred flags the first time it parses (its command was chosen,
    or its --help asked for)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deferred = []

    def defer(self, add_flags) -> None:
        """Call add_flags(self) before this parser first parses."""
        self._deferred.append(add_flags)

    def complete(self) -> "CommandParser":
        while self._deferred:
            self._deferred.pop(0)(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.complete()
        return super().parse_known_args(args, namespace)


class ListFlag(argparse.Action):
    """A list field: `--gguf f16 q8_0`, `--gguf f16,q8_0` and repeated `--gguf` all read as [f16, q8_0]."""

    def __init__(self, *args, allowed: tuple = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed = allowed  # checked after splitting: argparse's own choices would see "f16,q8_0" whole

    def __call__(self, parser, namespace, values, option_string=None):
        items = [part.strip() for value in values for part in value.split(",") if part.strip()]
        wrong = [item for item in items if self.allowed and item not in self.allowed]
        if wrong:
            parser.error(f"{option_string}: {', '.join(wrong)} is not one of {', '.join(self.allowed)}")
        setattr(namespace, self.dest, (getattr(namespace, self.dest) or []) + items)


def add_group_flags(parser: argparse.ArgumentParser, group, only: tuple[str, ...] = (),
                    exclude: tuple[str, ...] = ()) -> list[FieldSpec]:
    """A flag for each field of `group` (a schema group, or a settings dataclass), `only` those if given;
    returns the fields, for `flag_values`."""
    from tunesmith.config.fields import dataclass_fields, schema_fields

    walk = schema_fields if hasattr(group, "model_fields") else dataclass_fields
    fields = walk(group, prefix=f"{group.__name__}.")  # a field's name is what follows the group's
    specs = [spec for spec in fields if (not only or spec.name in only) and spec.name not in exclude]
    for spec in specs:
        parser.add_argument(f"--{spec.name.replace('_', '-')}", dest=spec.name, default=None, help=_help(spec),
                            **_parsing(spec))
    return specs


def flag_values(args: argparse.Namespace, specs: list[FieldSpec]) -> dict:
    """The fields whose flags were given, nested as in the group (--temperature sets sampling.temperature)."""
    from tunesmith.config.paths import set_path

    values: dict = {}
    for spec in specs:
        if getattr(args, spec.name) is not None:
            set_path(values, spec.path.split(".", 1)[1], getattr(args, spec.name))
    return values


def merged(base: dict, flags: dict) -> dict:
    """`base` (a group's values) with the given flags on top, nested groups merged key by key."""
    result = dict(base)
    for key, value in flags.items():
        result[key] = merged(result.get(key) or {}, value) if isinstance(value, dict) else value
    return result


def _help(spec: FieldSpec) -> str:
    text = spec.description.replace("%", "%%")  # argparse formats help with %
    if spec.required or spec.default in (None, [], ""):
        return text
    default = ",".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
    return f"{text} (default: {default})".strip()


def _parsing(spec: FieldSpec) -> dict:
    """How argparse reads the field's value."""
    if spec.kind == "bool":
        return {"action": argparse.BooleanOptionalAction}
    if spec.kind in ("int", "float"):
        return {"type": int if spec.kind == "int" else float, "metavar": spec.kind.upper()}
    if spec.kind == "choice":
        return {"type": type(spec.choices[0]), "choices": spec.choices}
    if spec.kind == "choices":
        return {"action": ListFlag, "allowed": tuple(map(str, spec.choices)), "nargs": "+", "metavar": "KIND"}
    if isinstance(spec.default, list):  # a list of free-form items, e.g. eval's rewards
        return {"action": ListFlag, "nargs": "+", "metavar": "ITEM"}
    return {}
