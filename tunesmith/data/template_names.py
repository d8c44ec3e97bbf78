"""Template names: 'auto', a built-in .jinja file, or one of LLaMA-Factory's names (table in lf_templates.yaml).

A LLaMA-Factory name resolves to a built-in that renders the same turns, to the tokenizer's own template when
the tokenizer has one of that family, or to an error giving the reason and the closest names that work.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError

BUILTIN_DIR = Path(__file__).parent / "templates"
LF_TABLE = Path(__file__).parent / "lf_templates.yaml"
AUTO = "auto"
VISION_REASON = "it feeds images, video or audio, and tunesmith has no support for them yet"


@dataclass(frozen=True)
class TemplateChoice:
    """What a template name stands for: a built-in file, or the tokenizer's own template (builtin None)."""

    builtin: str | None
    family: str | None = None  # tokenizer's own: whose template it must be
    marker: str | None = None  # tokenizer's own: a text that family's template always contains

    def describe(self) -> str:
        if self.builtin:
            return f"the built-in template '{self.builtin}'"
        own = "the tokenizer's own chat template"
        return f"{own} ({self.family})" if self.family else own


def builtin_template_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.jinja"))


def choose_template(name: str) -> TemplateChoice:
    """What `name` stands for; an unknown or refused name raises a TunesmithError naming the ones that work."""
    if name == AUTO:
        return TemplateChoice(None)
    if name in builtin_template_names():
        return TemplateChoice(name)
    table = _lf_table()
    if name in table["builtin"]:
        return TemplateChoice(table["builtin"][name])
    if name in table["tokenizer"]:
        family, marker = table["tokenizer"][name]
        return TemplateChoice(None, family, marker)
    if name in table["refuse"]:
        reason, closest = table["refuse"][name]
        raise TunesmithError(f"template '{name}' (a LLaMA-Factory name) is not supported: {' '.join(reason.split())}; "
                             f"closest that work: {', '.join(closest)}")
    if name in table["multimodal"]:
        raise TunesmithError(f"template '{name}' (a LLaMA-Factory name) is not supported: {VISION_REASON}; for the "
                             f"text alone use '{table['multimodal'][name]}'")
    close = difflib.get_close_matches(name, accepted_names(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise TunesmithError(f"unknown template '{name}'; {hint}use 'auto', a built-in "
                         f"({', '.join(builtin_template_names())}) or a LLaMA-Factory template name")


def template_source(tokenizer, name: str) -> str:
    """The jinja source `name` stands for with this tokenizer."""
    choice = choose_template(name)
    if choice.builtin:
        return (BUILTIN_DIR / f"{choice.builtin}.jinja").read_text(encoding="utf-8")
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        whose = f"the {choice.family} template" if choice.family else "its own template"
        raise TunesmithError(f"template '{name}' means {whose}, but the tokenizer has no chat template; set "
                             f"model.template to a built-in one: {', '.join(builtin_template_names())}")
    if choice.marker and choice.marker not in own:
        raise TunesmithError(f"template '{name}' means the tokenizer's own {choice.family} template, but this "
                             f"tokenizer's template is not one (it lacks '{choice.marker}'); use 'auto' to train with "
                             "the template it has, or a built-in one")
    return own


def accepted_names() -> list[str]:
    """Every name model.template accepts: auto, the built-ins and the LLaMA-Factory names that map to something."""
    table = _lf_table()
    return sorted({AUTO, *builtin_template_names(), *table["builtin"], *table["tokenizer"]})


@functools.cache
def _lf_table() -> dict[str, dict]:
    return yaml.safe_load(LF_TABLE.read_text(encoding="utf-8"))
