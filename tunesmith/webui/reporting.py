"""User errors become a message on the page (a toast and the status line) instead of a stack trace."""

from __future__ import annotations

from functools import wraps

import gradio as gr
from pydantic import ValidationError

from tunesmith.errors import TunesmithError


def reported(outputs: int = 1, empty=None):
    """Wrap a handler whose first output is a status line; on a user error the status shows the message
    and the other `outputs - 1` outputs are left as they are (or set to `empty`)."""
    def decorate(handler):
        @wraps(handler)
        def wrapper(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except (TunesmithError, ValidationError) as err:
                gr.Warning(str(err))
                message = f"**⚠** {err}"
                if outputs == 1:
                    return message
                rest = gr.skip() if empty is None else empty
                return (message, *[rest] * (outputs - 1))
        return wrapper
    return decorate
