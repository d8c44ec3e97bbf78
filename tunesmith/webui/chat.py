"""The Chat tab's model: one engine loaded in the server process at a time, streaming replies."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Iterator

from tunesmith.errors import TunesmithError
from tunesmith.run_folder import config_path, is_run_folder


class ChatSession:
    def __init__(self):
        self.engine = None
        self.description = ""
        self._lock = threading.Lock()  # one generation at a time: the engine is not re-entrant

    def load(self, model: str | None, checkpoint: str | None, template: str | None,
             gguf_file: str | None = None) -> str:
        """Load `model`, or a run folder / checkpoint in `checkpoint` (an adapter goes on `model`)."""
        from tunesmith.infer.loader import load_engine
        from tunesmith.run_folder import is_adapter

        self.unload()
        template = template or None
        if not checkpoint:
            engine, what = load_engine(model=model, template=template, gguf_file=gguf_file or None), model
        elif is_run_folder(Path(checkpoint)):
            # A run folder carries its own template; only an explicit non-auto choice replaces it.
            engine = load_engine(run=checkpoint, template=None if template == "auto" else template)
            what = checkpoint
        elif is_adapter(Path(checkpoint)):
            model, gguf_file = _base_of(Path(checkpoint), model)
            engine = load_engine(model=model, adapter=checkpoint, template=template, gguf_file=gguf_file)
            what = f"{model} + {checkpoint}"
        else:
            engine, what = load_engine(model=checkpoint, template=template), checkpoint
        self.engine, self.description = engine, what
        return what

    def unload(self) -> None:
        import torch

        with self._lock:
            self.engine, self.description = None, ""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def reads_images(self) -> bool:
        """Whether the loaded model is a vision-language one (its template has an image side)."""
        return self.engine is not None and getattr(self.engine.template, "media", None) is not None

    def reply(self, history: list[dict], system: str, settings, turn_images: list[list[str]] = ()) -> Iterator[str]:
        """The assistant's reply to `history` (ending with the user's message), growing piece by piece.
        `turn_images`: the image files of each user message, in order (the Chat tab's uploads); they go to the
        engine as `tunesmith chat --image` sends them, placed before their message's text."""
        from tunesmith.infer.chat_cli import refuse_typed_placeholder, user_message

        if self.engine is None:
            raise TunesmithError("no model is loaded; press Load model first")
        messages = [{"role": "system", "content": system}] if system.strip() else []
        turns = iter(turn_images)
        for message in history:
            text = _text_of(message["content"])
            if message["role"] != "user":
                messages.append({"role": message["role"], "content": text})
                continue
            attached = next(turns, [])
            refuse_typed_placeholder(text, any(turn_images))
            messages.append(user_message(text, len(attached)))
        images = [path for turn in turn_images for path in turn]
        with self._lock:
            text = ""
            for piece in self.engine.stream(messages, settings, images=images or None):
                text += piece
                yield text


def _base_of(checkpoint: Path, typed: str | None) -> tuple[str, str | None]:
    """The base model an adapter checkpoint was trained on: its run's, else the one typed in the page."""
    from tunesmith.config import load_saved_config
    from tunesmith.config.trust import saved_model_config

    run_config = config_path(checkpoint.parent)
    if run_config.is_file():
        base = saved_model_config(load_saved_config(run_config).model, run_config, False,
                                  "start `tunesmith chat --trust-remote-code`")
        return base.path, base.gguf_file
    if not typed:
        raise TunesmithError(f"{checkpoint} is an adapter outside a run folder; type its base model path too")
    return typed, None


def _text_of(content) -> str:
    """Gradio may hand message content back as a list of parts; the engine takes plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)
