"""`tunesmith chat`: streaming multi-turn chat in the terminal."""

from __future__ import annotations

import sys
from pathlib import Path

from tunesmith.data.media import IMAGE_PLACEHOLDER, check_image
from tunesmith.errors import TunesmithError
from tunesmith.infer.engine import ContextTooLong, GenerationSettings
from tunesmith.infer.library_warnings import HeldWarnings

HELP = "commands: /image PATH adds an image to your next message, /clear forgets the conversation, /exit (or Ctrl-D) quits"
IMAGE = "/image "


CLEAR = "/clear"


def next_message(read=input) -> str | None:
    """The user's next line: None when they quit (/exit, /quit, Ctrl-D, Ctrl-C), CLEAR for /clear."""
    try:
        text = read("\nyou> ").strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    return None if text in ("/exit", "/quit") else text


def answer_once(engine, prompt: str, system: str | None, settings: GenerationSettings,
                images: list[str] = ()) -> str:
    images = [checked_image(path) for path in images]
    refuse_typed_placeholder(prompt, bool(images))
    messages = start_messages(system) + [user_message(prompt, len(images))]
    held = HeldWarnings()
    reply = _stream_reply(engine, messages, settings, held, images)
    print()
    held.show()
    return reply


def chat_loop(engine, system: str | None, settings: GenerationSettings, read=input, images: list[str] = ()) -> None:
    """Chat turn by turn. Images (--image, /image PATH) join the next message; the conversation keeps every
    image it has seen, each where its message put it."""
    print(HELP)
    messages = start_messages(system)
    pending, seen = [checked_image(path) for path in images], []
    held = HeldWarnings()
    while (text := next_message(read)) is not None:
        if text == CLEAR:
            messages, pending, seen = start_messages(system), [], []
            print("(history cleared)")
            continue
        if text.startswith(IMAGE):
            try:
                pending.append(checked_image(text[len(IMAGE):].strip()))
                print(f"(image added to your next message: {len(pending)} waiting)")
            except TunesmithError as err:
                print(f"[{err}]")
            continue
        if not text:
            continue
        try:
            refuse_typed_placeholder(text, bool(seen or pending))
        except TunesmithError as err:
            print(f"[{err}]")
            continue
        messages.append(user_message(text, len(pending)))
        try:
            print("assistant> ", end="", flush=True)
            reply = _stream_reply(engine, messages, settings, held, seen + pending)
        except (ContextTooLong, TunesmithError) as err:
            messages.pop()
            print(f"\n[{err}]")
            continue
        seen, pending = seen + pending, []
        messages.append({"role": "assistant", "content": reply})
        context = engine.count_tokens(messages)
        limit = f" / {engine.max_context}" if engine.max_context else ""
        print(f"\n[context: {context}{limit} tokens]", flush=True)
        held.show()


def start_messages(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def user_message(text: str, images: int) -> dict:
    """The user's turn, its images placed before the text (as LLaMA-Factory's demo data puts them)."""
    return {"role": "user", "content": IMAGE_PLACEHOLDER * images + text}


def refuse_typed_placeholder(text: str, conversation_has_images: bool) -> None:
    """The one rule (data/media_render.py): text a user typed never claims an image's place. In a conversation
    with images, a typed placeholder would stand for one of them, so the message is refused; without images it
    stays plain text."""
    if conversation_has_images and IMAGE_PLACEHOLDER in text:
        raise TunesmithError(f"a message says {IMAGE_PLACEHOLDER}, which would stand for an image; remove it "
                             "(images go before the message's text)")


def checked_image(path: str) -> str:
    """A local image file the user named, checked to exist and decode."""
    return check_image(Path(path).expanduser(), f"image {path}")


def _stream_reply(engine, messages: list[dict], settings: GenerationSettings, held: HeldWarnings,
                  images: list[str] = ()) -> str:
    pieces = []
    with held.holding():
        for piece in engine.stream(messages, settings, images=list(images) or None):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    return "".join(pieces).strip()
