"""`tunesmith chat`: streaming multi-turn chat in the terminal."""

from __future__ import annotations

import sys

from tunesmith.infer.engine import ContextTooLong, GenerationSettings
from tunesmith.infer.library_warnings import HeldWarnings

HELP = "commands: /clear forgets the conversation, /exit (or Ctrl-D) quits"


CLEAR = "/clear"


def next_message(read=input) -> str | None:
    """The user's next line: None when they quit (/exit, /quit, Ctrl-D, Ctrl-C), CLEAR for /clear."""
    try:
        text = read("\nyou> ").strip()
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    return None if text in ("/exit", "/quit") else text


def answer_once(engine, prompt: str, system: str | None, settings: GenerationSettings) -> str:
    messages = start_messages(system) + [{"role": "user", "content": prompt}]
    held = HeldWarnings()
    reply = _stream_reply(engine, messages, settings, held)
    print()
    held.show()
    return reply


def chat_loop(engine, system: str | None, settings: GenerationSettings, read=input) -> None:
    print(HELP)
    messages = start_messages(system)
    held = HeldWarnings()
    while (text := next_message(read)) is not None:
        if text == CLEAR:
            messages = start_messages(system)
            print("(history cleared)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        try:
            print("assistant> ", end="", flush=True)
            reply = _stream_reply(engine, messages, settings, held)
        except ContextTooLong as err:
            messages.pop()
            print(f"\n[{err}]")
            continue
        messages.append({"role": "assistant", "content": reply})
        context = engine.count_tokens(messages)
        limit = f" / {engine.max_context}" if engine.max_context else ""
        print(f"\n[context: {context}{limit} tokens]", flush=True)
        held.show()


def start_messages(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def _stream_reply(engine, messages: list[dict], settings: GenerationSettings, held: HeldWarnings) -> str:
    pieces = []
    with held.holding():
        for piece in engine.stream(messages, settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    return "".join(pieces).strip()
