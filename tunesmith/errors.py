"""The one error type users see: a message that names the problem and the fix, printed on one line."""


class TunesmithError(Exception):
    """A problem with the user's input (config, data, paths). The CLI prints it without a traceback."""

