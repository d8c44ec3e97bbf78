"""The Train tab: every training field of the schema, dataset preview, and a live view of the running job."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from tunesmith.errors import TunesmithError
from tunesmith.webui import train_actions as actions
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.forms import ConfigForm, Translated, field_id, field_widget, grid, matches
from tunesmith.webui.reporting import reported
from tunesmith.webui.topbar import TopBar

# Training and validation loss; training and validation reward (online stages).
SERIES_COLORS = {"loss": "#4c78a8", "eval_loss": "#e45756", "reward": "#54a24b", "eval_reward": "#f58518"}
BUTTONS = ("preview_command", "estimate", "start", "stop", "resume")


@dataclass
class TrainWidgets:
    dataset_dir: gr.Textbox
    datasets: gr.Dropdown
    preview_data: gr.Button
    samples: gr.HighlightedText
    run_name: gr.Textbox
    buttons: dict[str, gr.Button]
    args_path: gr.Textbox
    save_args: gr.Button
    load_args: gr.Button
    status: gr.Markdown
    config_yaml: gr.Code
    command: gr.Textbox
    chart: gr.LinePlot


def build_train_tab(ctx: WebuiContext, tr: Translated, form: ConfigForm, layout: dict, top: TopBar) -> gr.LinePlot:
    """The tab's widgets and events; returns the loss chart, which the page's poll keeps current."""
    dataset_dir, datasets, preview_data, samples = _dataset_section(ctx, tr, form)
    trainable = [spec for spec in ctx.specs if spec.path.split(".")[0] not in layout["other_tabs"]]
    grid([spec for spec in trainable if matches(spec.path, layout["primary"])], form, tr, per_row=5)
    placed = layout["topbar"] + layout["primary"] + layout["dataset_row"] + layout["derived"] + layout["vision"]
    rest = [spec for spec in trainable if not matches(spec.path, placed)]
    for group in dict.fromkeys(spec.path.split(".")[0] for spec in rest):
        with tr.ui(gr.Accordion(tr.t(f"group_{group}"), open=False, elem_id=f"group-{group}"), f"group_{group}"):
            grid([spec for spec in rest if spec.path.split(".")[0] == group], form, tr)
    # Hidden until model.path names a vision-language model (the panel, not its fields: choosing a method kind
    # sets the visibility of the fields it has, and every kind has these).
    with tr.ui(gr.Accordion(tr.t("group_vision"), open=False, visible=False, elem_id="group-vision"),
               "group_vision") as vision:
        grid([spec for spec in trainable if matches(spec.path, layout["vision"])], form, tr)
    form.widgets["model.path"].change(lambda path: gr.update(visible=actions.is_vision_model_path(ctx, path)),
                                      form.widgets["model.path"], vision)
    widgets = TrainWidgets(dataset_dir, datasets, preview_data, samples, *_controls(tr), *_outputs(tr))
    _wire(ctx, form, widgets, top)
    return widgets.chart


def _dataset_section(ctx: WebuiContext, tr: Translated, form: ConfigForm):
    from tunesmith.webui.preview import TRAINED

    folder_spec, names_spec = form.spec("data.dataset_dir"), form.spec("data.datasets")
    with gr.Row(equal_height=True):
        folder = field_widget(folder_spec, tr, scale=2)
        names = tr.field(gr.Dropdown(choices=[], value=[], multiselect=True, label=tr.texts.label(names_spec, tr.lang),
                                     info=tr.texts.info(names_spec, tr.lang), elem_id=field_id(names_spec.path),
                                     scale=3), names_spec)
        preview = tr.ui(gr.Button(tr.t("preview_data"), elem_id="preview-data", scale=0, min_width=140),
                        "preview_data", "value")
    form.add(folder_spec, folder)
    form.add(names_spec, names)
    samples = tr.ui(gr.HighlightedText(label=tr.t("samples"), color_map={TRAINED: "green"}, elem_id="samples",
                                       show_legend=True, combine_adjacent=False), "samples")
    return folder, names, preview, samples


def _controls(tr: Translated):
    with gr.Row(equal_height=True):
        run_name = tr.ui(gr.Textbox(value=_default_run_name, label=tr.t("run_name"), elem_id="run-name", scale=2),
                         "run_name")
        buttons = {key: tr.ui(gr.Button(tr.t(key), elem_id=key.replace("_", "-"),
                                        variant="primary" if key == "start" else "secondary"), key, "value")
                   for key in BUTTONS}
    with gr.Row(equal_height=True):
        args_path = tr.ui(gr.Textbox(label=tr.t("args_path"), elem_id="args-path", scale=3), "args_path")
        save_args = tr.ui(gr.Button(tr.t("save_args"), elem_id="save-args"), "save_args", "value")
        load_args = tr.ui(gr.Button(tr.t("load_args"), elem_id="load-args"), "load_args", "value")
    return run_name, buttons, args_path, save_args, load_args


def _outputs(tr: Translated):
    status = gr.Markdown(elem_id="train-status")
    with gr.Row():
        config_yaml = tr.ui(gr.Code(language="yaml", label=tr.t("config_yaml"), elem_id="config-yaml", max_lines=24),
                            "config_yaml")
        command = tr.ui(gr.Textbox(label=tr.t("command"), lines=2, elem_id="command"), "command")
    # Fixed colours: the chart starts empty, and colours picked from the first (empty) data would stay unset.
    chart = tr.ui(gr.LinePlot(x="step", y="loss", color="series", color_map=SERIES_COLORS, label=tr.t("loss_chart"),
                              elem_id="loss-chart", height=300), "loss_chart")
    return status, config_yaml, command, chart


def _wire(ctx: WebuiContext, form: ConfigForm, w: TrainWidgets, top: TopBar) -> None:
    inputs = set(form.widgets.values()) | {w.run_name, top.language}

    def config_of(data):
        return actions.build_run_config(ctx, form.values(data), data[w.run_name])

    def say(data, key, **values):
        return ctx.texts.text(key, data[top.language]).format(**values)

    @reported(outputs=3)
    def preview_command(data):
        return ("", *actions.command_preview(config_of(data)))

    @reported()
    def start(data):
        return say(data, "started", pid=actions.start_training(ctx, config_of(data)).process.pid)

    @reported()
    def resume(data):
        return say(data, "started", pid=actions.resume_training(ctx, data[w.run_name]).process.pid)

    @reported()
    def stop(data):
        return say(data, "stopped" if ctx.jobs.stop() else "no_job")

    @reported(outputs=2)
    def preview_data(data):
        from tunesmith.webui.preview import preview_samples

        return "", preview_samples(config_of(data))

    for event in (w.dataset_dir.submit, w.dataset_dir.blur):
        event(lambda folder: dataset_choices(ctx, folder, warn=True), w.dataset_dir, w.datasets)
    w.preview_data.click(preview_data, inputs, [w.status, w.samples])
    w.buttons["preview_command"].click(preview_command, inputs, [w.status, w.config_yaml, w.command])
    w.buttons["estimate"].click(reported()(lambda data: actions.estimate_memory(config_of(data))), inputs, w.status)
    w.buttons["start"].click(start, inputs, w.status)
    w.buttons["stop"].click(stop, inputs, w.status)
    w.buttons["resume"].click(resume, inputs, w.status)
    w.save_args.click(reported()(lambda data: say(data, "saved", path=actions.save_arguments(
        ctx, config_of(data), data[w.args_path]))), inputs | {w.args_path}, w.status)
    for union in ("method", "stage"):
        union_widgets = [form.widgets[spec.path] for spec in form.union_fields(union)]
        # .input, not .change: loading saved arguments sets the kind too, and must keep the loaded values.
        form.widgets[f"{union}.kind"].input(lambda kind, union=union: form.kind_updates(union, kind),
                                            form.widgets[f"{union}.kind"], union_widgets)
    fields = list(form.widgets.values())
    w.load_args.click(reported(outputs=1 + len(fields), empty=gr.skip())(
        lambda path: ("", *form.updates_from(actions.load_arguments(ctx, path)))), w.args_path, [w.status, *fields])


def dataset_choices(ctx: WebuiContext, folder: str, warn: bool):
    """The dataset picker's choices for `folder`; none (and, if `warn`, a toast saying why) when unreadable."""
    try:
        return gr.update(choices=actions.dataset_names(ctx, folder))
    except TunesmithError as err:
        if warn:
            gr.Warning(str(err))
        return gr.update(choices=[], value=[])


def _default_run_name() -> str:
    return time.strftime("train-%Y%m%d-%H%M%S")
