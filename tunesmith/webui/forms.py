"""Gradio widgets made from schema fields, and the registry that relabels every widget on a language switch."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import yaml

from tunesmith.webui.i18n import Texts
from tunesmith.config.paths import get_path
from tunesmith.webui.schema_fields import FieldSpec, applies, chosen_kinds, to_form_value

LAYOUT_FILE = Path(__file__).with_name("layout.yaml")


def load_layout(path: Path = LAYOUT_FILE) -> dict[str, list[str]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


class Translated:
    """Every widget whose text depends on the language, with how to rebuild that text."""

    def __init__(self, texts: Texts, lang: str):
        self.texts = texts
        self.lang = lang
        self._items: list[tuple[gr.components.Component, Callable[[str], dict]]] = []

    def ui(self, component, key: str, attr: str = "label", info_key: str | None = None):
        """Register a page widget whose `attr` (label, value for buttons and markdown) is ui text `key`."""
        def update(lang: str) -> dict:
            values = {attr: self.texts.text(key, lang)}
            if info_key:
                values["info"] = self.texts.text(info_key, lang)
            return values

        self._items.append((component, update))
        return component

    def field(self, component, spec: FieldSpec):
        self._items.append((component, lambda lang: {"label": self.texts.label(spec, lang),
                                                      "info": self.texts.info(spec, lang)}))
        return component

    @property
    def components(self) -> list:
        return [component for component, _ in self._items]

    def updates(self, lang: str) -> list:
        return [gr.update(**update(lang)) for _, update in self._items]

    def t(self, key: str) -> str:
        """Text in the page's starting language (for widgets created now)."""
        return self.texts.text(key, self.lang)


def field_id(path: str) -> str:
    """The HTML id of a field's widget: 'field-train-lr' for train.lr (for tests and styling)."""
    return "field-" + path.replace(".", "-")


def field_widget(spec: FieldSpec, tr: Translated, **overrides) -> gr.components.Component:
    """The widget for one schema field, labelled and described in the current language."""
    kwargs: dict[str, Any] = dict(label=tr.texts.label(spec, tr.lang), info=tr.texts.info(spec, tr.lang),
                                  value=to_form_value(spec, spec.default), elem_id=field_id(spec.path))
    kwargs.update(overrides)
    if spec.kind == "bool":
        widget = gr.Checkbox(**kwargs)
    elif spec.kind in ("int", "float") and not spec.optional:
        widget = gr.Number(precision=0 if spec.kind == "int" else None, **kwargs)
    elif spec.kind in ("choice", "choices"):
        # An optional choice offers an empty entry, which means None.
        choices = ([("—", "")] if spec.optional else []) + [(str(choice), choice) for choice in spec.choices]
        widget = gr.Dropdown(choices=choices, multiselect=spec.kind == "choices", **kwargs)
    else:  # text, YAML, and optional numbers (an empty box means None, which gr.Number cannot show)
        hint = "yaml_placeholder" if spec.kind == "yaml" else "empty_is_none" if spec.optional else None
        placeholder = tr.t(hint) if hint else None
        widget = gr.Textbox(placeholder=placeholder, **kwargs)
    return tr.field(widget, spec)


@dataclass
class ConfigForm:
    """The widgets of the config fields placed on the page, by dotted path."""

    specs: list[FieldSpec]
    widgets: dict[str, gr.components.Component] = field(default_factory=dict)

    def add(self, spec: FieldSpec, widget) -> None:
        self.widgets[spec.path] = widget

    def spec(self, path: str) -> FieldSpec | None:
        return next((spec for spec in self.specs if spec.path == path), None)

    def values(self, data: dict) -> dict[str, Any]:
        """Form values by dotted path, from the {component: value} dict a Gradio handler receives."""
        return {path: data[widget] for path, widget in self.widgets.items() if widget in data}

    def updates_from(self, raw: dict) -> list:
        """Widget updates that show a loaded config (fields it lacks go back to their kind's defaults; fields
        of kinds it does not choose are hidden)."""
        kinds = chosen_kinds(self.specs, {spec.path: get_path(raw, spec.path) for spec in self.specs
                                          if get_path(raw, spec.path) is not None})
        updates = []
        for path, _widget in self.widgets.items():
            spec = self.spec(path)
            default = spec.default_for(kinds.get(spec.union, ""))
            updates.append(gr.update(value=to_form_value(spec, get_path(raw, path, default)),
                                     visible=applies(spec, kinds)))
        return updates

    def union_fields(self, union: str) -> list[FieldSpec]:
        """The placed fields that belong to one kind or another of `union` ('stage')."""
        return [self.spec(path) for path in self.widgets if self.spec(path).union == union]

    def kind_updates(self, union: str, kind: str) -> list:
        """On choosing `kind`: its fields shown with its defaults, the other kinds' fields hidden."""
        return [gr.update(value=to_form_value(spec, spec.default_for(kind)), visible=kind in spec.kinds)
                for spec in self.union_fields(union)]


def grid(specs: list[FieldSpec], form: ConfigForm, tr: Translated, per_row: int = 4) -> None:
    """Lay out widgets for `specs`, `per_row` to a row; fields of kinds other than the default ones start hidden."""
    kinds = chosen_kinds(form.specs, {})
    for start in range(0, len(specs), per_row):
        with gr.Row():
            for spec in specs[start:start + per_row]:
                form.add(spec, field_widget(spec, tr, visible=applies(spec, kinds)))
