"""The one exception type users see: its message is printed as a single line."""


class SweepError(Exception):
    """Bad input or an impossible request; the CLI prints it and exits non-zero."""


def one_line(error: object, *, limit: int | None = None) -> str:
    """An exception (or any message) as one line, for `SweepError` texts;
    cut to `limit` characters (with "...") where a library's text can be long."""
    text = " ".join(str(error).split()) or type(error).__name__
    if limit is not None and len(text) > limit:
        return text[:limit] + "..."
    return text
