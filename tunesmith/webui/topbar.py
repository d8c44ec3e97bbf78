"""The bar above the tabs: language, model, method, checkpoint picker, template, quantization."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from tunesmith.webui.context import WebuiContext
from tunesmith.webui.forms import ConfigForm, Translated, field_id, field_widget, matches
from tunesmith.webui.runs import list_loadables


@dataclass
class TopBar:
    language: gr.Dropdown
    checkpoint: gr.Dropdown
    refresh: gr.Button


def build_topbar(ctx: WebuiContext, tr: Translated, form: ConfigForm, patterns: list[str]) -> TopBar:
    from tunesmith.data.template import builtin_template_names

    languages = [(name, code) for code, name in ctx.texts.languages.items()]
    with gr.Row(equal_height=True):
        language = tr.ui(gr.Dropdown(choices=languages, value=tr.lang, label=tr.t("language"), scale=1,
                                     elem_id="language", min_width=120), "language")
        for spec in (spec for spec in ctx.specs if matches(spec.path, patterns)):
            scale = 2 if spec.path == "model.path" else 1
            if spec.path == "model.template":
                widget = tr.field(gr.Dropdown(["auto", *builtin_template_names()], value=spec.default,
                                              allow_custom_value=True, label=tr.texts.label(spec, tr.lang),
                                              info=tr.texts.info(spec, tr.lang), elem_id=field_id(spec.path),
                                              scale=scale), spec)
            else:
                widget = field_widget(spec, tr, scale=scale)
            form.add(spec, widget)
        checkpoint = tr.ui(gr.Dropdown(choices=list_loadables(ctx.runs_dir), value=None, label=tr.t("checkpoint"),
                                       info=tr.t("checkpoint_info"), scale=2, elem_id="checkpoint"),
                           "checkpoint", info_key="checkpoint_info")
        refresh = tr.ui(gr.Button(tr.t("refresh"), scale=0, min_width=90, elem_id="refresh"), "refresh", "value")
    refresh.click(lambda: gr.update(choices=list_loadables(ctx.runs_dir)), outputs=checkpoint)
    return TopBar(language, checkpoint, refresh)
