"""User-facing errors: the CLI prints these as one line, never as a traceback wall."""


class UserError(Exception):
    """Bad input from the user (path, key, value, file). The message names the fault."""


class TaskUnavailable(UserError):
    """A transfer task cannot run on this machine: its data or every engine it runs on is missing.
    Callers that run many tasks (the method study) skip it rather than record a failure."""
