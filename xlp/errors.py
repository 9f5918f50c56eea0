"""User-facing errors: the CLI prints them without a traceback and exits non-zero."""


class XlpError(Exception):
    """An error caused by the user's input (spec, data, checkpoints), with a message that says where."""
