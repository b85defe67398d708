"""Which job holds which GPU.

Two sources, merged per GPU index:

* processes: each GPU process's pid is mapped to a Slurm job through
  ``/proc/<pid>/cgroup`` (``.../job_<id>/...``), with ``SLURM_JOB_ID`` in
  ``/proc/<pid>/environ`` as fallback;
* allocations: the GPU indices Slurm allocated to running jobs (from the Slurm
  collector), so a GPU held by a job with no process on it still shows its job.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

_CGROUP_JOB = re.compile(r"/job_(\d+)(?:/|$)")


@dataclass(frozen=True, slots=True)
class JobRef:
    job_id: str
    user: str = ""
    partition: str = ""
    source: str = "process"  # "process" (found through a GPU process) | "slurm" (allocation)
    profile: str | None = None  # simulated load profile, for sim GPUs that follow Slurm


# A provider of Slurm allocations: GPU index -> jobs holding it.
AllocationProvider = Callable[[], Mapping[int, Sequence[JobRef]]]


class ProcJobMapper:
    """pid -> :class:`JobRef` through ``/proc``; remembers answers while a pid lives."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self._root = Path(proc_root)
        self._cache: dict[tuple[int, str], JobRef | None] = {}

    def job_for_pid(self, pid: int) -> JobRef | None:
        base = self._root / str(pid)
        try:
            start = (base / "stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
        key = (pid, start)  # a reused pid has another start time
        if key in self._cache:
            return self._cache[key]
        job = self._from_cgroup(base) or self._from_environ(base)
        self._cache[key] = job
        return job

    def forget_except(self, pids: Iterable[int]) -> None:
        live = set(pids)
        self._cache = {k: v for k, v in self._cache.items() if k[0] in live}

    def _from_cgroup(self, base: Path) -> JobRef | None:
        try:
            text = (base / "cgroup").read_text()
        except OSError:
            return None
        match = _CGROUP_JOB.search(text)
        if match is None:
            return None
        return JobRef(match.group(1), user=self._user(base))

    def _from_environ(self, base: Path) -> JobRef | None:
        try:
            raw = (base / "environ").read_bytes()
        except OSError:
            return None
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        job_id = env.get("SLURM_JOB_ID", "")
        if not job_id.isdigit():
            return None
        return JobRef(
            job_id,
            user=env.get("SLURM_JOB_USER") or self._user(base),
            partition=env.get("SLURM_JOB_PARTITION", ""),
        )

    @staticmethod
    def _user(base: Path) -> str:
        try:
            uid = os.stat(base).st_uid
            return pwd.getpwuid(uid).pw_name
        except (OSError, KeyError):
            return ""


def merge_jobs(
    by_process: Mapping[int, Sequence[JobRef]],
    allocations: Mapping[int, Sequence[JobRef]],
) -> dict[int, tuple[JobRef, ...]]:
    """Jobs per GPU index from both sources; Slurm's allocation fills in user and partition
    and keeps a GPU that has no process."""
    merged: dict[int, dict[str, JobRef]] = {}
    for index, jobs in allocations.items():
        for job in jobs:
            merged.setdefault(index, {})[job.job_id] = job
    for index, jobs in by_process.items():
        for job in jobs:
            known = merged.setdefault(index, {}).get(job.job_id)
            if known is None:
                merged[index][job.job_id] = job
            else:
                merged[index][job.job_id] = replace(
                    known,
                    user=known.user or job.user,
                    partition=known.partition or job.partition,
                    source="process",
                )
    return {
        index: tuple(sorted(jobs.values(), key=lambda j: (len(j.job_id), j.job_id)))
        for index, jobs in merged.items()
        if jobs
    }
