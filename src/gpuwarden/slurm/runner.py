"""Running a command: the one place that touches :mod:`subprocess` (argv lists only)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


class Runner(Protocol):
    """Runs ``argv`` (never through a shell). Raises ``FileNotFoundError`` when the binary
    is missing and ``subprocess.TimeoutExpired`` when ``timeout`` passes."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        stdin: str | None = None,
    ) -> CommandResult: ...


class SubprocessRunner:
    """The real :class:`Runner`: ``subprocess.run`` with ``shell=False``."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        stdin: str | None = None,
    ) -> CommandResult:
        args = [str(a) for a in argv]
        start = time.perf_counter()
        # Bytes in and out, decoded here: text mode's newline translation costs a full copy
        # of squeue's output (megabytes on a big queue) for nothing.
        proc = subprocess.run(
            args,
            input=stdin.encode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            env=dict(env),
            timeout=timeout,
            check=False,
            shell=False,
        )
        return CommandResult(
            argv=tuple(args),
            returncode=proc.returncode,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
            duration_s=time.perf_counter() - start,
        )
