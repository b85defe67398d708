"""Simulated-GPU hook: a job's comment chooses the load profile its GPUs show.

``sbatch --comment "gpuwarden:profile=inference"``; no tag (or an unknown profile) means
``train``. Unallocated GPUs are not in the result (the sim shows them idle).

A job whose GPUs should differ names one profile per GPU, in index order on each node, with
``*N`` to repeat one and ``+`` between them: ``gpuwarden:profile=train*7+idle`` is seven busy
GPUs and an idle eighth (the last profile covers any GPUs beyond the list).
"""

from __future__ import annotations

import re

from gpuwarden.slurm.allocation import JobRef, gpu_allocations
from gpuwarden.slurm.model import SlurmSnapshot

PROFILES = ("train", "inference", "idle", "thermal-throttle", "xid-storm")
DEFAULT_PROFILE = "train"
_TAG_RE = re.compile(r"(?:^|[\s,;])gpuwarden:profile=([A-Za-z0-9_*+-]+)")
_PART_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\*(\d{1,4}))?$")


def profile_from_comment(comment: str | None, position: int = 0) -> str:
    """The profile a ``gpuwarden:profile=...`` tag in ``comment`` gives the job's GPU at
    ``position`` (its rank among the job's GPUs on the node, by index)."""
    if not comment:
        return DEFAULT_PROFILE
    match = _TAG_RE.search(comment)
    if match is None:
        return DEFAULT_PROFILE
    names: list[str] = []
    for part in match.group(1).split("+"):
        one = _PART_RE.match(part)
        if one is None:
            return DEFAULT_PROFILE
        names += [one.group(1).lower()] * int(one.group(2) or 1)
    if not names:
        return DEFAULT_PROFILE
    name = names[min(position, len(names) - 1)]
    return name if name in PROFILES else DEFAULT_PROFILE


def allocated_profiles(allocations: dict[int, JobRef]) -> dict[int, str]:
    """GPU index -> profile for a node's allocated GPUs (``gpu_allocations``): each GPU
    takes its place in its job's list of profiles."""
    by_job: dict[int, list[int]] = {}
    for index, ref in allocations.items():
        by_job.setdefault(ref.job_id, []).append(index)
    rank = {index: n for indices in by_job.values() for n, index in enumerate(sorted(indices))}
    return {index: profile_from_comment(ref.comment, rank[index])
            for index, ref in allocations.items()}


def gpu_profiles(snapshot: SlurmSnapshot | None, node_name: str) -> dict[int, str]:
    """GPU index -> profile, for each GPU of ``node_name`` allocated to a running job."""
    return allocated_profiles(gpu_allocations(snapshot, node_name))
