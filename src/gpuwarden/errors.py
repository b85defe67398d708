"""Errors meant for a person: the message names the field and the fix; the CLI prints it
on one line and exits non-zero, with no traceback."""


class GpuwardenError(Exception):
    """A problem the user can fix; ``str(exc)`` says what and how."""


class NotFoundError(GpuwardenError):
    """What was asked for does not exist (an API answers 404)."""


class ConflictError(GpuwardenError):
    """The request conflicts with the current state (an API answers 409)."""
