"""The one exception type a user should ever see: a one-line message."""


class UiaError(Exception):
    """Bad input or a missing resource. Its message is one line that names the
    key or file at fault and what was expected; stages print it without a
    traceback and exit with status 2."""
