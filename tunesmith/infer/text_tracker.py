"""Turn a growing list of generated token ids into final text pieces, honouring stop strings.

Text is released only once it is final: a trailing incomplete UTF-8 character (decoded as U+FFFD) and any
tail that could still become a stop string are held back, so what a stream shows is always a prefix of the
finished reply and a stop string never leaks out half-printed.

Decoding is incremental: each token decodes only the few ids since the last complete character, read in
the context of the ids just before them (so a tokenizer that drops a word's leading space at the start of
a sequence still gives that space), rather than the whole reply again at every token.
"""

from __future__ import annotations


class TextTracker:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.context = 0  # ids[context:settled] give the decoding context of the ids after them
        self.settled = 0  # ids before this are already part of `text`
        self.released = 0  # characters of text already handed out
        self.text = ""
        self.stopped = False  # a stop string was found; the text is cut before it

    def add(self, token_id: int) -> str:
        """Record one generated token; return the newly final text (possibly empty)."""
        self.ids.append(token_id)
        text = self.text + self._new_text(final=False)
        cut = self._first_stop(text)
        if cut is not None:
            self.text, self.stopped = text[:cut], True
            return self._release(len(self.text))
        self.text = text
        return self._release(len(text) - self._possible_stop_tail(text))

    def finish(self) -> str:
        """The rest of the text once generation has ended (an incomplete last character included)."""
        if not self.stopped:
            self.text += self._new_text(final=True)
        return self._release(len(self.text))

    def _new_text(self, final: bool) -> str:
        """The text the ids after `settled` add; empty while it still ends in an incomplete character."""
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        before = decode(self.ids[self.context:self.settled])
        after = decode(self.ids[self.context:])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self.context, self.settled = self.settled, len(self.ids)
        return after[len(before):]

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
