"""The page: top bar, Train / Evaluate / Chat / Export tabs, and the panel of the one running job."""

from __future__ import annotations

import gradio as gr

from tunesmith.webui.chat_tab import build_chat_tab
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.forms import ConfigForm, Translated, load_layout
from tunesmith.webui.i18n import DEFAULT_LANGUAGE
from tunesmith.webui.job_view import job_view
from tunesmith.webui.tool_actions import result_rows
from tunesmith.webui.tool_tabs import build_eval_tab, build_export_tab
from tunesmith.webui.topbar import build_topbar
from tunesmith.webui.train_tab import build_train_tab, dataset_choices

POLL_SECONDS = 1.0
CSS = "#job-state progress { vertical-align: middle; }"


def build_app(ctx: WebuiContext, lang: str = DEFAULT_LANGUAGE) -> gr.Blocks:
    layout = load_layout()
    tr = Translated(ctx.texts, lang)
    form = ConfigForm(ctx.specs)
    with gr.Blocks(title="tunesmith", analytics_enabled=False) as demo:
        tr.ui(gr.Markdown(tr.t("title_md")), "title_md", "value")
        top = build_topbar(ctx, tr, form, layout["topbar"])
        with gr.Tabs():
            tabs = {}
            with gr.Tab(tr.t("tab_train"), elem_id="tab-train") as tabs["tab_train"]:
                chart = build_train_tab(ctx, tr, form, layout, top)
            with gr.Tab(tr.t("tab_eval"), elem_id="tab-eval") as tabs["tab_eval"]:
                results = build_eval_tab(ctx, tr, form, top)
            with gr.Tab(tr.t("tab_chat"), elem_id="tab-chat") as tabs["tab_chat"]:
                build_chat_tab(ctx, tr, form, top)
            with gr.Tab(tr.t("tab_export"), elem_id="tab-export") as tabs["tab_export"]:
                build_export_tab(ctx, tr, top)
        for key, tab in tabs.items():
            tr.ui(tab, key)
        progress = gr.HTML(elem_id="job-panel")
        log = tr.ui(gr.Textbox(label=tr.t("log"), lines=12, max_lines=12, elem_id="log", autoscroll=True), "log")
        _wire_page(ctx, demo, tr, form, top, [progress, log, chart, results])
    return demo


def _wire_page(ctx: WebuiContext, demo: gr.Blocks, tr: Translated, form: ConfigForm, top, job_outputs: list) -> None:
    shown = gr.State(None)  # what this page was last sent, so unchanged parts are not redrawn every second

    def poll(lang, last):
        progress, log, points = job_view(ctx, lang)
        job = ctx.jobs.job
        finished_eval = job is not None and job.kind == "eval" and not job.running
        results = result_rows(job.output) if finished_eval else None
        now = (progress, log, None if points is None else points.to_json(), results)
        last = last or (None,) * len(now)
        values = (progress, log, points, results)
        return (*[value if key != before else gr.skip() for value, key, before in zip(values, now, last)], now)

    timer = gr.Timer(POLL_SECONDS)
    # The page polls the server's job: a page opened (or reopened) mid-run shows it at once.
    for event in (timer.tick, demo.load):
        event(poll, [top.language, shown], [*job_outputs, shown], show_progress="hidden")
    folder, names = form.widgets["data.dataset_dir"], form.widgets["data.datasets"]
    demo.load(lambda path: dataset_choices(ctx, path, warn=False), folder, names)
    top.language.change(tr.updates, top.language, tr.components)


def launch(ctx: WebuiContext, host: str, port: int, auth: tuple[str, str] | None, share: bool) -> None:
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, auth=auth, share=share, css=CSS, show_error=True,
                footer_links=["gradio"])
