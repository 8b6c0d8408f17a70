"""The one error type the CLI turns into a one-line message and exit code 2."""


class GsmvError(Exception):
    """Bad input or a bad run folder: the message names what and where (file:line: field ...)."""
