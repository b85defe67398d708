"""The warning ladder's judgements, as pure functions of facts and policy: is this job
exempt, is it idle, busy or unknown, and what is its next step and when.  The engine
(:mod:`gpuwarden.reclaim.engine`) feeds them and carries their verdicts out."""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gpuwarden.checks.model import HOLDER_NAME
from gpuwarden.config import JobReclaimConfig
from gpuwarden.slurm.model import SlurmJob

Gpu = tuple[str, int]  # (inventory node name, GPU index)
Activity = Literal["idle", "busy", "unknown"]


@dataclass(frozen=True, slots=True)
class JobFacts:
    """A running Slurm job that holds GPUs, as the controller's snapshot gives it."""

    key: str  # "42" or "42_3": what scancel accepts
    job_id: int
    name: str
    user: str
    account: str
    partition: str
    comment: str
    start_time: float | None
    time_limit_s: int | None
    gpus: tuple[Gpu, ...]

    @property
    def subject(self) -> str:
        return f"job {self.key}"


def job_facts(job: SlurmJob, node_of: Mapping[str, str]) -> JobFacts | None:
    """The facts of one job of the controller's Slurm snapshot, or None when it is not a
    running job holding GPUs.  ``node_of`` maps Slurm node names (and hostnames) to
    inventory node names; a GPU on a node gpuwarden does not watch keeps its Slurm name,
    so it reads as unknown, never as idle."""
    if not job.is_running:
        return None
    detail = job.gpu_detail
    if not detail:
        return None
    gpus: list[Gpu] = []
    for node in sorted(detail) if len(detail) > 1 else detail:
        name = node_of.get(node, node)
        gpus += [(name, i) for i in detail[node]]
    if not gpus:
        return None
    return JobFacts(key=job.key, job_id=job.job_id, name=job.name, user=job.user,
                    account=job.account, partition=job.partition, comment=job.comment,
                    start_time=job.start_time, time_limit_s=job.time_limit_s,
                    gpus=tuple(gpus))


@functools.lru_cache(maxsize=64)
def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")


def _matches(value: str, patterns: Iterable[str]) -> bool:
    """Shell-style patterns, compiled once per list (a cycle asks for every job)."""
    return _pattern(tuple(patterns)).match(value) is not None


def exemption(job: JobFacts, policy: JobReclaimConfig, now: float) -> str | None:
    """Why ``job`` is never reclaimed, or None.  The grace period is not an exemption
    (see :func:`in_grace`)."""
    ex = policy.exempt
    if job.name == HOLDER_NAME and job.user == "root":
        return "gpuwarden's own health-check holder"
    if job.user in ex.users:
        return f"user {job.user} is exempt"
    if job.account and job.account in ex.accounts:
        return f"account {job.account} is exempt"
    if job.partition in ex.partitions:
        return f"partition {job.partition} is exempt"
    if ex.names and _matches(job.name, ex.names):
        return f"job name {job.name!r} is exempt"
    if ex.keep_comment and ex.keep_comment in job.comment:
        return f"its comment asks to keep it ({ex.keep_comment})"
    inter = ex.interactive
    if inter is not None and _matches(job.name, inter.names):
        hours = (now - job.start_time) / 3600 if job.start_time else 0.0
        if hours <= inter.max_hours and len(job.gpus) <= inter.max_gpus:
            return (f"interactive ({job.name!r}, {len(job.gpus)} GPU, under "
                    f"{inter.max_hours:g} h)")
    return None


def in_grace(job: JobFacts, policy: JobReclaimConfig, now: float) -> bool:
    return job.start_time is None or now - job.start_time < policy.grace


def activity(gpus: Iterable[Gpu], peak: Mapping[Gpu, float | None],
             policy: JobReclaimConfig) -> tuple[Activity, str]:
    """A job's activity from each GPU's peak utilization over the stretch looked at (None:
    no data for that GPU).  Missing data is never idleness: any GPU without data makes the
    job unknown, unless the GPUs with data already make it busy."""
    held = gpus if isinstance(gpus, tuple) else tuple(gpus)
    threshold = policy.idle_below
    busy = 0
    unknown: list[Gpu] = []
    for g in held:  # one pass: a reclaim cycle asks this of every running GPU job
        p = peak.get(g)
        if p is None:
            unknown.append(g)
        elif p >= threshold:
            busy += 1
    needed = 1 if policy.busy_fraction is None else max(
        1, math.ceil(policy.busy_fraction * len(held) - 1e-9))
    if busy >= needed:
        return "busy", f"{busy} of {len(held)} GPUs busy"
    if unknown:
        names = ", ".join(f"{n}/gpu{i}" for n, i in unknown[:3])
        return "unknown", f"no fresh data for {names}"
    return "idle", f"{len(held) - busy} of {len(held)} GPUs below {threshold:g} %"


@dataclass(frozen=True, slots=True)
class Step:
    event: Literal["warn", "act"]
    number: int  # the warning's number (1-based); for "act", the number of warnings given
    due_at: float


def next_step(policy: JobReclaimConfig, idle_since: float, stage: int,
              last_warned_at: float | None) -> Step:
    """The next rung: warning ``stage + 1`` at ``idle_since + warn_after[stage]``, then the
    action at ``act_after`` — and never sooner after the last warning than the policy
    promised (a warning sent late, after a pause, keeps its notice period)."""
    warns = policy.warn_after
    if stage < len(warns):
        return Step("warn", stage + 1, idle_since + warns[stage])
    notice = policy.act_after - (warns[-1] if warns else 0.0)
    due = idle_since + policy.act_after
    if last_warned_at is not None:
        due = max(due, last_warned_at + notice)
    return Step("act", len(warns), due)
