"""The page's text in each language, read from locales.yaml (a data file, so translators edit no code).

Config fields need no entry: a field without one is labelled from its name, and its help text is the
schema's own description, so a field added to the schema is shown (in English) without touching this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tunesmith.webui.schema_fields import FieldSpec

LOCALES_FILE = Path(__file__).with_name("locales.yaml")
DEFAULT_LANGUAGE = "en"


@dataclass
class Texts:
    languages: dict[str, str]  # code -> name shown in the language picker
    ui: dict[str, dict[str, str]]  # key -> {language: text}
    fields: dict[str, dict[str, str]]  # dotted path -> {language: label, "<language>_info": help}

    @classmethod
    def load(cls, path: Path = LOCALES_FILE) -> "Texts":
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(table["languages"], table["ui"], table.get("fields") or {})

    def text(self, key: str, lang: str) -> str:
        entry = self.ui.get(key)
        if entry is None:  # e.g. a config group added to the schema after this table was written
            return humanize(key.removeprefix("group_"))
        return entry.get(lang) or entry[DEFAULT_LANGUAGE]

    def label(self, spec: FieldSpec, lang: str) -> str:
        entry = self.fields.get(spec.path, {})
        return entry.get(lang) or entry.get(DEFAULT_LANGUAGE) or humanize(spec.path)

    def info(self, spec: FieldSpec, lang: str) -> str:
        return self.fields.get(spec.path, {}).get(f"{lang}_info") or spec.description


def humanize(path: str) -> str:
    """'train.max_grad_norm' -> 'Max grad norm'."""
    words = path.rsplit(".", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:]
