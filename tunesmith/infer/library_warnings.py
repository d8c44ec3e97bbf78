"""Library warnings kept out of a conversation.

transformers, peft and torch warn from inside generation (deprecations, future changes). Printed as they
come, they land in the middle of a streamed reply on the same terminal, where the user reads them as the
model's words. While a reply is produced they are held back; after it each distinct one is shown once, on
stderr, in a dim line of its own, before the next prompt.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from typing import Iterator

DIM, RESET = "\033[2m", "\033[0m"


class HeldWarnings:
    """Holds the warnings raised while replies are produced; `show` prints each distinct one once."""

    def __init__(self, out=None):
        self.out = out  # where held warnings are shown: stderr unless given
        self.pending: list[warnings.WarningMessage] = []
        self.shown: set[str] = set()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold back every warning raised inside the block, generation threads included (Python's warning
        filters are process-wide)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # each distinct warning once, as Python shows them by default
            try:
                yield
            finally:
                self.pending += caught

    def show(self) -> None:
        """Print the held warnings not shown before, one dim line each; call it between replies."""
        out = self.out or sys.stderr
        dim = out.isatty() if hasattr(out, "isatty") else False
        for message in self.pending:
            text = f"{message.category.__name__}: {message.message}"
            if text not in self.shown:
                self.shown.add(text)
                line = f"[library warning] {text}"
                out.write(f"{DIM}{line}{RESET}\n" if dim else f"{line}\n")
        self.pending = []
        out.flush()


def warnings_to_logging() -> None:
    """For servers (the API, the web UI): warnings go through `logging` with the server's own log lines,
    never into a response."""
    logging.captureWarnings(True)
