"""The one exception type users see: its message is printed as a single line."""


class SweepError(Exception):
    """Bad input or an impossible request; the CLI prints it and exits non-zero."""
