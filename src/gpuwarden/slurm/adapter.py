"""The Slurm command adapter: every call with a timeout, argv lists only, failures
classified into :mod:`gpuwarden.slurm.errors`, outputs read by an output-shape adapter."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from gpuwarden.slurm.errors import (
    SlurmError,
    SlurmNotInstalled,
    SlurmTimeout,
    classify_failure,
)
from gpuwarden.slurm.model import NodeInfo, SchedulerStats, SlurmJob
from gpuwarden.slurm.parsers import (
    SSHARE_ARGS,
    FieldFormatShape,
    OutputShape,
    parse_job_exit_codes,
    parse_job_gpu_details,
    parse_sacct,
    parse_sdiag,
    parse_sshare,
    sacct_args,
)
from gpuwarden.slurm.runner import CommandResult, Runner, SubprocessRunner

CLIENT_COMMANDS = ("squeue", "sinfo", "sdiag", "scontrol", "sbatch", "scancel", "sacct",
                   "sacctmgr", "sshare", "srun")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"

GpuDetail = Mapping[str, tuple[int, ...]]


class SlurmAdapter:
    """Runs the Slurm client commands for one cluster.

    ``env`` is laid over the inherited environment (pass ``{"SLURM_CONF": path}`` for a
    private cluster); ``runner`` runs argv lists (tests and benchmarks may wrap it);
    ``timeout`` bounds every call unless a call passes its own; ``shape`` chooses how
    squeue/sinfo are asked and read.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        runner: Runner | None = None,
        timeout: float = 10.0,
        shape: OutputShape | None = None,
        inherit_env: bool = True,
    ) -> None:
        base = dict(os.environ) if inherit_env else {}
        base.update(env or {})
        # Epoch timestamps, whatever the user set: exact, and 20x cheaper to parse than ISO.
        base["SLURM_TIME_FORMAT"] = "%s"
        # With TZ unset glibc re-reads /etc/localtime for every timestamp squeue formats
        # (10,000 jobs: ~30 ms of squeue's CPU). Epoch seconds do not depend on the zone.
        base["TZ"] = "UTC"
        self.env: Mapping[str, str] = base
        self.runner: Runner = runner or SubprocessRunner()
        self.timeout = timeout
        self.shape: OutputShape = shape or FieldFormatShape()

    # ---- raw commands -----------------------------------------------------------------
    def run(
        self,
        command: str,
        args: Sequence[str],
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run one Slurm client command; raise a classified :class:`SlurmError` on failure
        (``check=False``: a non-zero exit is returned, for commands whose output says more
        than their status, such as a step's)."""
        if command not in CLIENT_COMMANDS:
            raise ValueError(f"not a Slurm client command: {command!r}")
        argv = [command, *args]
        limit = self.timeout if timeout is None else timeout
        try:
            result = self.runner(argv, env=self.env, timeout=limit, stdin=stdin)
        except FileNotFoundError as exc:
            raise SlurmNotInstalled(
                f"{command} not found on PATH; install Slurm with `{INSTALL_HINT}`",
                command=" ".join(argv),
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmTimeout(f"{command} did not answer within {limit:g} s",
                               command=" ".join(argv)) from exc
        except OSError as exc:
            raise SlurmError(f"{command} could not run: {exc}", command=" ".join(argv)) from exc
        if check and result.returncode != 0:
            raise classify_failure(argv, result.returncode, result.stderr or result.stdout)
        return result

    # ---- reads ------------------------------------------------------------------------
    def jobs_text(self) -> str:
        return self.run("squeue", self.shape.squeue_args).stdout

    def nodes_text(self) -> str:
        return self.run("sinfo", self.shape.sinfo_args).stdout

    def sdiag_text(self) -> str:
        return self.run("sdiag", []).stdout

    def jobs(self) -> list[SlurmJob]:
        """Every job and array task in the queue (one squeue call)."""
        return self.shape.parse_jobs(self.jobs_text())

    def nodes(self) -> NodeInfo:
        """Every node and partition (one sinfo call)."""
        return self.shape.parse_nodes(self.nodes_text())

    def scheduler_stats(self) -> SchedulerStats:
        """The scheduler counters (one sdiag call)."""
        return parse_sdiag(self.sdiag_text())

    def fairshare(self) -> dict[str, float]:
        """FairShare by account (one sshare call; needs slurmdbd: raises
        :class:`~gpuwarden.slurm.errors.AccountingDisabled` without it)."""
        return parse_sshare(self.run("sshare", SSHARE_ARGS).stdout)

    def job_gpu_details(self, job_id: int | None = None) -> dict[int, GpuDetail]:
        """GPU indices per node for one job, or for every job when ``job_id`` is None."""
        args = ["--details", "--oneliner", "show", "job"]
        if job_id is not None:
            args.append(str(int(job_id)))
        return parse_job_gpu_details(self.run("scontrol", args).stdout)

    def job_exit_codes(self, job_id: int | None = None) -> dict[int, tuple[int, int]]:
        """(exit status, signal) of one job, or of every job slurmctld still holds."""
        args = ["--oneliner", "show", "job"]
        if job_id is not None:
            args.append(str(int(job_id)))
        return parse_job_exit_codes(self.run("scontrol", args).stdout)

    def finished_jobs(self, start: float, end: float | None = None,
                      timeout: float | None = None) -> list[SlurmJob]:
        """Allocations that ended in a finished state between ``start`` and ``end`` (epoch
        seconds; ``end`` None: now), from slurmdbd (one sacct call). Raises
        :class:`~gpuwarden.slurm.errors.AccountingDisabled` when the cluster keeps none."""
        return parse_sacct(self.run("sacct", sacct_args(start, end), timeout=timeout).stdout)

    def version(self) -> str:
        return self.run("sinfo", ["--version"]).stdout.strip()
