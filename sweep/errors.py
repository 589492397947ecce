"""The one exception type users see: its message is printed as a single line."""


class SweepError(Exception):
    """Bad input or an impossible request; the CLI prints it and exits non-zero."""


def one_line(error: object) -> str:
    """An exception (or any message) as one line, for `SweepError` texts."""
    return " ".join(str(error).split()) or type(error).__name__
