"""The Chat tab: load the base model or a trained run / checkpoint in-process, and chat with streaming."""

from __future__ import annotations

import gradio as gr

from tunesmith.errors import TunesmithError
from tunesmith.webui.chat_images import ChatImages, upload_folder
from tunesmith.webui.context import WebuiContext
from tunesmith.webui.forms import ConfigForm, Translated, field_widget
from tunesmith.webui.reporting import reported
from tunesmith.webui.schema_fields import build_raw_config, dataclass_fields
from tunesmith.webui.topbar import TopBar

SETTINGS_PREFIX = "generation."


def build_chat_tab(ctx: WebuiContext, tr: Translated, form: ConfigForm, top: TopBar) -> None:
    from tunesmith.infer.engine import GenerationSettings

    with gr.Row(equal_height=True):
        load = tr.ui(gr.Button(tr.t("load_model"), variant="primary", elem_id="load-model"), "load_model", "value")
        unload = tr.ui(gr.Button(tr.t("unload_model"), elem_id="unload-model"), "unload_model", "value")
        loaded = gr.Markdown(elem_id="chat-status")
    system = tr.ui(gr.Textbox(label=tr.t("system_prompt"), lines=2, elem_id="system-prompt"), "system_prompt")
    specs = dataclass_fields(GenerationSettings, SETTINGS_PREFIX)
    settings: dict = {}
    accordion = gr.Accordion(tr.t("generation_settings"), open=False, elem_id="generation-settings")
    with tr.ui(accordion, "generation_settings"):
        with gr.Row():
            for spec in specs:
                settings[field_widget(spec, tr)] = spec
    chatbot = tr.ui(gr.Chatbot(label=tr.t("chat"), elem_id="chatbot", height=360), "chat")
    with gr.Row(equal_height=True):
        message = tr.ui(gr.Textbox(label=tr.t("message"), elem_id="message", scale=5), "message")
        send = tr.ui(gr.Button(tr.t("send"), variant="primary", elem_id="send", scale=1), "send", "value")
        clear = tr.ui(gr.Button(tr.t("clear"), elem_id="clear", scale=1), "clear", "value")
    # Shown only while a vision-language model is loaded; what it holds goes with the next message.
    uploads = tr.ui(gr.File(label=tr.t("chat_images"), file_count="multiple", file_types=["image"], type="filepath",
                            visible=False, elem_id="chat-images"), "chat_images")
    # This browser session's uploaded images (webui/chat_images.py), removed when the page closes.
    images = gr.State(None, delete_callback=lambda kept: kept and kept.close())

    model_path, template = form.widgets["model.path"], form.widgets["model.template"]
    gguf_file = form.widgets.get("model.gguf_file")

    @reported()
    def load_model(lang, path, checkpoint, template_name, gguf=None):
        model = ctx.guard.model(path) if path else None
        chosen = str(ctx.guard.existing(checkpoint, "checkpoint", "dir")) if checkpoint else None
        if model is None and chosen is None:
            raise TunesmithError("no model to load; type a model path or pick a checkpoint")
        return ctx.texts.text("loaded", lang).format(what=ctx.chat.load(model, chosen, template_name, gguf))

    def show_uploads():
        return gr.update(visible=ctx.chat.reads_images)

    load.click(load_model, [top.language, model_path, top.checkpoint, template, *([gguf_file] if gguf_file else [])],
               loaded).then(show_uploads, None, uploads)
    unload.click(lambda: ctx.chat.unload() or "", None, loaded).then(show_uploads, None, uploads)
    respond = _responder(ctx, specs)
    chat_inputs = [message, uploads, chatbot, images, system, *settings]
    chat_outputs = [message, uploads, chatbot, images]
    send.click(respond, chat_inputs, chat_outputs)
    message.submit(respond, chat_inputs, chat_outputs)
    clear.click(forget, images, [chatbot, images])


def forget(kept):
    """The Clear button: an empty conversation, its images' copies removed."""
    if kept is not None:
        kept.forget_after(0)
    return [], kept


def _responder(ctx: WebuiContext, specs: list):
    """The send handler: append the user's message (with the images waiting in the upload box), then stream
    the reply into the last assistant turn. On an error the conversation is as it was before the message."""
    def respond(text, uploads, history, kept, system_prompt, *values):
        from tunesmith.infer.engine import GenerationSettings

        before, kept = list(history or []), kept or ChatImages()
        if not text.strip():
            yield text, gr.skip(), before, kept
            return
        turns = len(kept.turns)
        try:
            raw = build_raw_config(specs, {spec.path: value for spec, value in zip(specs, values)})
            chosen = GenerationSettings(**raw.get(SETTINGS_PREFIX.rstrip("."), {}))
            kept.turns.append(kept.keep(uploads or [], upload_folder()))
            shown = [{"path": path} for path in kept.turns[-1]] + [text] if kept.turns[-1] else text
            history = before + [{"role": "user", "content": shown}, {"role": "assistant", "content": ""}]
            yield "", None, history, kept
            for reply in ctx.chat.reply(history[:-1], system_prompt, chosen, kept.turns):
                history[-1]["content"] = reply
                yield "", None, history, kept
        except (TunesmithError, ValueError) as err:
            gr.Warning(str(err))
            kept.forget_after(turns)
            yield text, uploads, before, kept

    return respond
