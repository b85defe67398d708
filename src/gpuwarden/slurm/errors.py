"""Slurm failures, classified so callers can react to the kind rather than the text."""

from __future__ import annotations

from collections.abc import Sequence


class SlurmError(Exception):
    """Base class of every error raised by :mod:`gpuwarden.slurm`."""

    def __init__(self, message: str, *, command: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.command = command
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message


class SlurmNotInstalled(SlurmError):
    """A Slurm (or munge) binary is missing."""


class ControllerUnreachable(SlurmError):
    """slurmctld did not answer (down, wrong host/port, firewall)."""


class AuthError(SlurmError):
    """munge authentication failed (munged down, wrong key, wrong socket)."""


class SlurmTimeout(SlurmError):
    """A command did not finish within its timeout."""


class BadRequest(SlurmError):
    """Slurm refused the request itself (unknown job, invalid option, ...)."""


class CommandFailed(SlurmError):
    """A command failed in a way none of the other classes describes."""


class AccountingDisabled(SlurmError):
    """The cluster keeps no accounting (``AccountingStorageType=accounting_storage/none``):
    sacct has nothing to say, which is a configuration, not a failure."""


class ParseError(SlurmError):
    """A command's output did not have the expected shape."""


class ValidationError(SlurmError, ValueError):
    """An argument was refused before anything ran; names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{field}: {problem}; {fix}")
        self.field = field
        self.problem = problem
        self.fix = fix


class LocalClusterError(SlurmError):
    """The local cluster could not be started, inspected or stopped."""


_AUTH_MARKERS = (
    "munge",
    "authentication",
    "auth_g_",
    "invalid credential",
    "credential",
)
_UNREACHABLE_MARKERS = (
    "unable to contact slurm controller",
    "connection refused",
    "connect failure",
    "socket timed out",
    "communication connection failure",
    "no route to host",
    "slurm_persist_conn_open",
    "could not establish a configuration source",
    "unable to establish controller machine",
)
_BAD_REQUEST_MARKERS = (
    "invalid job id",
    "invalid node name",
    "invalid partition",
    "invalid user",
    "invalid account",
    "invalid generic resource",
    "invalid gres",
    "invalid feature",
    "invalid time limit",
    "invalid argument",
    "invalid option",
    "invalid node state",
    "requested node configuration is not available",
    "batch job submission failed",
    "unrecognized option",
    "invalid job state",
    "job/step already completing or completed",
    "already completing",
    "job is no longer pending",
    "only pending jobs",
    "access/permission denied",
    "invalid",
)


def classify_failure(argv: Sequence[str], returncode: int, stderr: str) -> SlurmError:
    """Turn a failed command's stderr into the matching :class:`SlurmError`."""
    text = stderr.strip()
    low = text.lower()
    cmd = " ".join(argv)
    first = _first_line(text) or f"exit status {returncode}"
    tool = argv[0].rsplit("/", 1)[-1] if argv else "slurm"
    if "accounting storage is disabled" in low:
        return AccountingDisabled(f"{tool}: the cluster keeps no accounting ({first})",
                                  command=cmd, stderr=text)
    if any(m in low for m in _UNREACHABLE_MARKERS):
        what = "slurmdbd" if tool in ("sacct", "sacctmgr") else "Slurm controller"
        return ControllerUnreachable(f"{tool}: {what} unreachable ({first})",
                                     command=cmd, stderr=text)
    if any(m in low for m in _AUTH_MARKERS):
        munge_lines = [ln.strip() for ln in text.splitlines() if "munge encode" in ln.lower()
                       or "munge decode" in ln.lower()]
        first = munge_lines[0] if munge_lines else first
        return AuthError(f"{tool}: munge authentication failed ({first}); "
                         "check that munged runs and shares the cluster key",
                         command=cmd, stderr=text)
    if any(m in low for m in _BAD_REQUEST_MARKERS):
        return BadRequest(f"{tool}: {first}", command=cmd, stderr=text)
    return CommandFailed(f"{tool} failed with exit status {returncode}: {first}",
                         command=cmd, stderr=text)


def _first_line(text: str) -> str:
    """The most telling line: the last one that says "error", else the first one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    if errors:
        return errors[-1]
    return lines[0] if lines else ""
