"""Which job holds which GPU index of a node (for the node daemon and simulated GPUs)."""

from __future__ import annotations

from dataclasses import dataclass

from gpuwarden.slurm.model import SlurmJob, SlurmSnapshot


@dataclass(frozen=True)
class JobRef:
    """The job a GPU is allocated to. ``name`` and ``comment`` are user text: data only."""

    job_id: int
    user: str
    partition: str
    name: str
    comment: str = ""
    array_job_id: int | None = None
    array_task_id: str | None = None

    @classmethod
    def of(cls, job: SlurmJob) -> JobRef:
        return cls(
            job_id=job.job_id,
            user=job.user,
            partition=job.partition,
            name=job.name,
            comment=job.comment,
            array_job_id=job.array_job_id,
            array_task_id=job.array_task_id,
        )


def gpu_allocations(snapshot: SlurmSnapshot | None, node_name: str) -> dict[int, JobRef]:
    """GPU index -> the running job that holds it, on ``node_name``.

    Empty when there is no snapshot or squeue failed in it. A GPU allocated to a job with no
    process on it still appears here: that is the point.
    """
    if snapshot is None:
        return {}
    out: dict[int, JobRef] = {}
    for job in snapshot.jobs:
        if not job.is_running:
            continue
        for index in job.gpu_detail.get(node_name, ()):
            out[index] = JobRef.of(job)
    return out


def all_gpu_allocations(snapshot: SlurmSnapshot | None) -> dict[str, dict[int, JobRef]]:
    """Node -> GPU index -> job, for every node with allocated GPUs."""
    if snapshot is None:
        return {}
    out: dict[str, dict[int, JobRef]] = {}
    for job in snapshot.jobs:
        if not job.is_running:
            continue
        for node, indices in job.gpu_detail.items():
            for index in indices:
                out.setdefault(node, {})[index] = JobRef.of(job)
    return out
