"""`tunesmith chat --compare`: several models answer the same prompt, shown side by side."""

from __future__ import annotations

import shutil
import textwrap

from tunesmith.infer.chat_cli import CLEAR, next_message, start_messages
from tunesmith.infer.engine import ContextTooLong, GenerationSettings
from tunesmith.infer.library_warnings import HeldWarnings

HELP = "compare mode: every model answers each message; /clear forgets the conversations, /exit quits"


def side_by_side(columns: list[tuple[str, str]], width: int) -> str:
    """Titled columns of wrapped text, separated by ' | ', fitting in `width` characters."""
    column_width = max(12, (width - 3 * (len(columns) - 1)) // len(columns))
    wrapped = []
    for title, text in columns:
        lines = [title[:column_width], "-" * min(column_width, max(len(title), 3))]
        for paragraph in text.splitlines() or [""]:
            lines += textwrap.wrap(paragraph, column_width) or [""]
        wrapped.append(lines)
    height = max(len(lines) for lines in wrapped)
    rows = []
    for i in range(height):
        cells = [(lines[i] if i < len(lines) else "").ljust(column_width) for lines in wrapped]
        rows.append(" | ".join(cells).rstrip())
    return "\n".join(rows)


def compare_loop(engines: list[tuple[str, object]], system: str | None, settings: GenerationSettings,
                 read=input) -> None:
    print(HELP)
    histories = {name: start_messages(system) for name, _ in engines}
    held = HeldWarnings()
    while (text := next_message(read)) is not None:
        if text == CLEAR:
            histories = {name: start_messages(system) for name, _ in engines}
            print("(history cleared)")
            continue
        if text:
            print(compare_turn(engines, histories, text, settings, held))


def compare_turn(engines, histories: dict[str, list[dict]], text: str, settings: GenerationSettings,
                 held: HeldWarnings | None = None) -> str:
    """Each model's reply to `text` after its own history (which gains the turn), laid out side by side."""
    held = held or HeldWarnings()
    columns = []
    for name, engine in engines:
        messages = histories[name] + [{"role": "user", "content": text}]
        print(f"({name} is answering...)", flush=True)
        try:
            with held.holding():
                reply = engine.generate(messages, settings).strip()
        except ContextTooLong as err:
            columns.append((name, f"[{err}]"))
            continue
        histories[name] = messages + [{"role": "assistant", "content": reply}]
        limit = f"/{engine.max_context}" if engine.max_context else ""
        columns.append((f"{name} [{engine.count_tokens(histories[name])}{limit} tokens]", reply))
    held.show()  # before the table, never inside it
    return side_by_side(columns, shutil.get_terminal_size().columns)
