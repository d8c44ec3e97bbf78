"""Turn a growing list of generated token ids into final text pieces, honouring stop strings.

Text is released only once it is final: a trailing incomplete UTF-8 character (decoded as U+FFFD) and any
tail that could still become a stop string are held back, so what a stream shows is always a prefix of the
finished reply and a stop string never leaks out half-printed.
"""

from __future__ import annotations


class TextTracker:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.released = 0  # characters of text already handed out
        self.text = ""
        self.stopped = False  # a stop string was found; the text is cut before it

    def add(self, token_id: int) -> str:
        """Record one generated token; return the newly final text (possibly empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = self._first_stop(text)
        if cut is not None:
            self.text, self.stopped = text[:cut], True
            return self._release(len(self.text))
        self.text = text
        safe = len(text.rstrip("\ufffd"))
        return self._release(safe - self._possible_stop_tail(text[:safe]))

    def finish(self) -> str:
        """The rest of the text once generation has ended."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        piece, self.released = self.text[self.released:upto], upto
        return piece

    def _first_stop(self, text: str) -> int | None:
        # Search only from where a new stop could begin: earlier text was already checked.
        start = max(0, self.released - max((len(s) for s in self.stop), default=0))
        found = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _possible_stop_tail(self, text: str) -> int:
        """Length of the longest end of `text` that is the start of some stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
