"""Exceptions that mean "the user asked for something wrong" rather than "mibench has a bug"."""


class UserError(Exception):
    """A mistake in the input (a name, an option, a file). The CLI prints it as one line."""
