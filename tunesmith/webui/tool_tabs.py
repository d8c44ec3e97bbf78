"""The Evaluate and Export tabs: the schema's eval and export groups as forms, and a start button each."""

from __future__ import annotations

import gradio as gr

from tunesmith.webui import tool_actions as actions
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.forms import ConfigForm, Translated, grid
from tunesmith.webui.reporting import reported
from tunesmith.webui.schema_fields import build_raw_config
from tunesmith.webui.topbar import TopBar


def _group_form(ctx: WebuiContext, tr: Translated, group: str, ui_set: tuple[str, ...]) -> ConfigForm:
    specs = [spec for spec in ctx.specs if spec.group == group and spec.name not in ui_set]
    form = ConfigForm(specs)
    grid(specs, form, tr)
    return form


def _options(form: ConfigForm, group: str, data: dict) -> dict:
    return build_raw_config(form.specs, form.values(data)).get(group, {})


def build_eval_tab(ctx: WebuiContext, tr: Translated, train_form: ConfigForm, top: TopBar) -> gr.Dataframe:
    """The eval group's fields; returns the results table, which the page's poll fills when a job ends."""
    form = _group_form(ctx, tr, "eval", actions.UI_SET_EVAL_FIELDS)
    start = tr.ui(gr.Button(tr.t("start_eval"), variant="primary", elem_id="start-eval"), "start_eval", "value")
    status = gr.Markdown(elem_id="eval-status")
    results = tr.ui(gr.Dataframe(headers=["metric", "value"], label=tr.t("eval_results"), elem_id="eval-results",
                                 interactive=False), "eval_results")
    model, folder, names = (train_form.widgets[path] for path in ("model.path", "data.dataset_dir", "data.datasets"))

    @reported()
    def run(data):
        job = actions.start_eval(ctx, data[model], data[top.checkpoint], _options(form, "eval", data),
                                 data[folder], data[names] or [])
        return ctx.texts.text("started", data[top.language]).format(pid=job.process.pid)

    start.click(run, set(form.widgets.values()) | {model, folder, names, top.checkpoint, top.language}, status)
    return results


def build_export_tab(ctx: WebuiContext, tr: Translated, top: TopBar) -> None:
    form = _group_form(ctx, tr, "export", actions.UI_SET_EXPORT_FIELDS)
    start = tr.ui(gr.Button(tr.t("start_export"), variant="primary", elem_id="start-export"), "start_export", "value")
    status = gr.Markdown(elem_id="export-status")

    @reported()
    def run(data):
        job = actions.start_export(ctx, data[top.checkpoint], _options(form, "export", data))
        return ctx.texts.text("started", data[top.language]).format(pid=job.process.pid)

    start.click(run, set(form.widgets.values()) | {top.checkpoint, top.language}, status)
