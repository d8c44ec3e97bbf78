"""`tunesmith chat`: streaming multi-turn chat in the terminal."""

from __future__ import annotations

import sys

from tunesmith.infer.engine import ContextTooLong, GenerationSettings

HELP = "commands: /clear forgets the conversation, /exit (or Ctrl-D) quits"


def answer_once(engine, prompt: str, system: str | None, settings: GenerationSettings) -> str:
    messages = _start(system) + [{"role": "user", "content": prompt}]
    return _stream_reply(engine, messages, settings)


def chat_loop(engine, system: str | None, settings: GenerationSettings, read=input) -> None:
    print(HELP)
    messages = _start(system)
    while True:
        try:
            text = read("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            messages = _start(system)
            print("(history cleared)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        try:
            print("assistant> ", end="", flush=True)
            reply = _stream_reply(engine, messages, settings)
        except ContextTooLong as err:
            messages.pop()
            print(f"\n[{err}]")
            continue
        messages.append({"role": "assistant", "content": reply})
        context = engine.count_tokens(messages)
        limit = f" / {engine.max_context}" if engine.max_context else ""
        print(f"\n[context: {context}{limit} tokens]")


def _start(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def _stream_reply(engine, messages: list[dict], settings: GenerationSettings) -> str:
    pieces = []
    for piece in engine.stream(messages, settings):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    return "".join(pieces).strip()
