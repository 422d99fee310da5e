"""User-facing errors: the CLI prints these as one line, never as a traceback wall."""


class UserError(Exception):
    """Bad input from the user (path, key, value, file). The message names the fault."""


class TaskUnavailable(UserError):
    """A task cannot run here: its engine or data is missing."""
