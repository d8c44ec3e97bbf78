"""A library's warning raised inside generation never lands in the chat's reply text."""

from __future__ import annotations

import io
import threading
import warnings

from tunesmith.infer.chat_cli import answer_once, chat_loop
from tunesmith.infer.compare_cli import compare_turn
from tunesmith.infer.engine import GenerationSettings

NOTICE = "past_key_values is deprecated and will be removed in version 5.40.0"


class WarningEngine:
    """Streams "Hello there" in pieces from a worker thread (as HfEngine does) and warns mid-reply."""

    max_context = 512

    def stream(self, messages, settings, images=None):
        pieces = []

        def work():
            pieces.append("Hello")
            warnings.warn(NOTICE, FutureWarning)
            pieces.append(" there")

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        yield from pieces

    def generate(self, messages, settings):
        return "".join(self.stream(messages, settings))

    def count_tokens(self, messages):
        return 7


def lines_from(*texts):
    queue = list(texts)

    def read(prompt):
        print(prompt, end="")
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def test_a_warning_inside_generation_is_shown_after_the_reply_not_in_it(capsys):
    chat_loop(WarningEngine(), None, GenerationSettings(), read=lines_from("hi", "again"))
    out, err = capsys.readouterr()
    assert NOTICE not in out
    assert out.count("assistant> Hello there\n[context: 7 / 512 tokens]") == 2
    assert err.count(NOTICE) == 1  # the same warning in the second turn is not repeated


def test_one_shot_answer_and_compare_keep_warnings_out_of_their_output(capsys):
    answer_once(WarningEngine(), "hi", None, GenerationSettings())
    table = compare_turn([("a", WarningEngine()), ("b", WarningEngine())], {"a": [], "b": []}, "hi",
                         GenerationSettings())
    out, err = capsys.readouterr()
    assert out.startswith("Hello there\n") and NOTICE not in out and NOTICE not in table
    assert "Hello there" in table
    assert err.count(NOTICE) == 2  # each of the two calls shows it once


def test_held_warnings_go_to_the_given_stream_once_each():
    from tunesmith.infer.library_warnings import HeldWarnings

    sink = io.StringIO()
    held = HeldWarnings(out=sink)
    for _ in range(3):
        with held.holding():
            warnings.warn(NOTICE, FutureWarning)
            warnings.warn("another", DeprecationWarning)
        held.show()
    assert sink.getvalue().splitlines() == [f"[library warning] FutureWarning: {NOTICE}",
                                            "[library warning] DeprecationWarning: another"]
