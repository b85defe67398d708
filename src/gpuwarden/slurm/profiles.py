"""Simulated-GPU hook: a job's comment chooses the load profile its GPUs show.

``sbatch --comment "gpuwarden:profile=inference"``; no tag (or an unknown profile) means
``train``. Unallocated GPUs are not in the result (the sim shows them idle).
"""

from __future__ import annotations

import re

from gpuwarden.slurm.allocation import gpu_allocations
from gpuwarden.slurm.model import SlurmSnapshot

PROFILES = ("train", "inference", "idle", "thermal-throttle", "xid-storm")
DEFAULT_PROFILE = "train"
_TAG_RE = re.compile(r"(?:^|[\s,;])gpuwarden:profile=([A-Za-z0-9_-]+)")


def profile_from_comment(comment: str | None) -> str:
    """The profile named by a ``gpuwarden:profile=NAME`` tag in ``comment``."""
    if not comment:
        return DEFAULT_PROFILE
    match = _TAG_RE.search(comment)
    if match is None:
        return DEFAULT_PROFILE
    name = match.group(1).lower()
    return name if name in PROFILES else DEFAULT_PROFILE


def gpu_profiles(snapshot: SlurmSnapshot | None, node_name: str) -> dict[int, str]:
    """GPU index -> profile, for each GPU of ``node_name`` allocated to a running job."""
    return {index: profile_from_comment(ref.comment)
            for index, ref in gpu_allocations(snapshot, node_name).items()}
