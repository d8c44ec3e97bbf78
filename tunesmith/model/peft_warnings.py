"""peft's calls into transformers that warn about transformers' own deprecations.

peft reads `is_gradient_checkpointing`, which transformers 5 deprecated: every adapter attached or loaded
printed a FutureWarning that the user can do nothing about (peft has to change), as the first line of a
LoRA run, a chat or an export. Wrap peft calls in `quiet_peft()` to hold back exactly that warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_peft() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield
