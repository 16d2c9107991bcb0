"""Exceptions that mean "the user asked for something wrong" rather than "mibench has a bug"."""


class UserError(Exception):
    """A mistake in the input (a name, an option, a file). The CLI prints it as one line."""


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def one_line_warnings() -> None:
    """Print warnings meant for users (e.g. unequal landmark counts in a dataset) as one line
    ``warning: ...`` instead of Python's two-line format with the source line. Called by the CLI
    and by worker processes."""
    import warnings

    warnings.formatwarning = _one_line
