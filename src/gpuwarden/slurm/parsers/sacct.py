"""``sacct --parsable2`` with explicit fields -> finished :class:`SlurmJob` records.

Chosen over ``sacct --json`` for the collector (measured here on 22.05.8 with 329
finished jobs, best of 5: text 0.14 s and 41 KB, parsed in 3.5 ms; JSON 0.38 s and 1 MB,
parsed in 10 ms), and because 22.05's JSON returns no job at all when given ``--state``
(so a window's running jobs would come too), fails under ``SLURM_TIME_FORMAT=%s``
("Invalid time specification"), and reports ``return_code 0`` for a script that exited 3
(``sacct -o ExitCode``: ``3:0``).
Fields are separated by the ASCII unit separator (``--delimiter``), so a ``|`` in a job
name cannot shift a column; one record per line.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.hostlist import expand_hostlist
from gpuwarden.slurm.model import FINISHED_STATES, SlurmJob
from gpuwarden.slurm.parsers.common import parse_int, parse_timestamp

UNIT_SEP = "\x1f"
SACCT_FIELDS = (
    "JobIDRaw", "JobID", "JobName", "User", "Account", "Partition", "State", "ExitCode",
    "Submit", "Start", "End", "ElapsedRaw", "TimelimitRaw", "NodeList", "NNodes", "NCPUS",
    "AllocTRES", "Reason",
)
# sacct's short names of FINISHED_STATES (``--state`` takes either).
FINISHED_STATE_CODES = ("BF", "CA", "CD", "DL", "F", "NF", "OOM", "PR", "TO")


def sacct_args(start: float, end: float | None = None) -> list[str]:
    """Allocations (no steps) of every user that ended in a finished state between
    ``start`` and ``end`` (epoch seconds; the adapter runs sacct with ``TZ=UTC``)."""
    args = ["--noheader", "--parsable2", f"--delimiter={UNIT_SEP}", "--allusers",
            "--allocations", f"--state={','.join(FINISHED_STATE_CODES)}",
            f"--starttime={_utc(start)}", f"--endtime={_utc(end) if end else 'now'}",
            f"--format={','.join(SACCT_FIELDS)}"]
    return args


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def parse_sacct(text: str, fields: Sequence[str] = SACCT_FIELDS) -> list[SlurmJob]:
    """One finished job per line; a job name with a newline in it spans lines, so a short
    line is joined with the next until it has every field."""
    jobs: list[SlurmJob] = []
    pending = ""
    for line in text.split("\n"):
        record = f"{pending}\n{line}" if pending else line
        if not record.strip():
            pending = ""
            continue
        count = record.count(UNIT_SEP) + 1
        if count < len(fields):
            pending = record
            continue
        pending = ""
        if count > len(fields):
            raise ParseError(f"expected {len(fields)} sacct fields, got {count}: "
                             f"{record[:200]!r}")
        job = _job(dict(zip(fields, record.split(UNIT_SEP), strict=True)))
        if job is not None:
            jobs.append(job)
    if pending:
        raise ParseError(f"truncated sacct record: {pending[:200]!r}")
    return jobs


def split_state(raw: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``."""
    return raw.strip().split(" ", 1)[0].upper()


def parse_exit_code(raw: str) -> tuple[int | None, int | None]:
    """``1:0`` -> (1, 0): the exit status and the signal."""
    status, sep, sig = raw.strip().partition(":")
    if not sep or not status.isdigit() or not sig.isdigit():
        return None, None
    return int(status), int(sig)


def gpus_in_alloc_tres(text: str) -> int | None:
    """``billing=1,cpu=1,gres/gpu=2,node=1`` -> 2 (typed ``gres/gpu:a100=2`` counted when
    the untyped total is missing); None when the TRES string is empty (never started)."""
    if not text.strip():
        return None
    total = typed = 0
    has_total = False
    for item in text.split(","):
        name, _, count = item.partition("=")
        if name == "gres/gpu":
            total, has_total = parse_int(count), True
        elif name.startswith("gres/gpu:"):
            typed += parse_int(count)
    return total if has_total else typed


def _job(row: dict[str, str]) -> SlurmJob | None:
    state = split_state(row["State"])
    if state not in FINISHED_STATES:
        return None
    raw_id = row["JobIDRaw"].strip()
    if not raw_id.isdigit():
        raise ParseError(f"sacct JobIDRaw {raw_id!r} is not a number")
    array_job_id: int | None = None
    task: str | None = None
    shown = row["JobID"].strip()
    if "_" in shown:
        base, _, task = shown.partition("_")
        array_job_id = int(base) if base.isdigit() else None
        task = task.strip("[]") or None
    nodelist = row["NodeList"].strip()
    nodes = () if nodelist in ("", "None assigned", "(null)") else expand_hostlist(nodelist)
    exit_code, signal = parse_exit_code(row["ExitCode"])
    limit = row["TimelimitRaw"].strip()
    start = parse_timestamp(row["Start"])
    end = parse_timestamp(row["End"])
    elapsed = row["ElapsedRaw"].strip()
    return SlurmJob(
        job_id=int(raw_id),
        name=row["JobName"],
        user=row["User"].strip(),
        partition=row["Partition"].strip(),
        state=state,
        reason=row["Reason"].strip() or "None",
        nodes=nodes,
        num_nodes=parse_int(row["NNodes"]),
        num_cpus=parse_int(row["NCPUS"]),
        array_job_id=array_job_id,
        array_task_id=task,
        submit_time=parse_timestamp(row["Submit"]),
        start_time=start,  # a job cancelled while pending: its cancel time, as End
        time_limit_s=int(limit) * 60 if limit.isdigit() else None,
        end_time=end,
        exit_code=exit_code,
        signal=signal,
        elapsed_s=int(elapsed) if elapsed.isdigit() else None,
        account=row["Account"].strip(),
        alloc_gpus=gpus_in_alloc_tres(row["AllocTRES"]),
        source="sacct",
    )
