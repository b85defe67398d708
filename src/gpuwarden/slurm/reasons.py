"""Slurm's pending-reason codes in plain words (one table, shared by the watchdog, the
API, the web UI and the ops agent).  Reason codes are Slurm's own; the text is ours."""

from __future__ import annotations

REASONS: dict[str, str] = {
    "None": "no reason given yet: the scheduler has not looked at the job",
    "Resources": "waiting for resources: the nodes, GPUs or CPUs it asks for are in use",
    "Priority": "waiting behind higher-priority jobs in the same partition",
    "ReqNodeNotAvail": "a node it needs is not available (down, drained or reserved)",
    "Dependency": "waiting for a job it depends on to finish",
    "DependencyNeverSatisfied": "a job it depends on failed; it will never start",
    "JobHeldUser": "held by its owner (scontrol release to let it run)",
    "JobHeldAdmin": "held by an administrator",
    "BeginTime": "its start time (--begin) has not come yet",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit is above its partition's limit",
    "PartitionConfig": "it asks for something its partition does not offer",
    "BadConstraints": "no node can satisfy its constraints",
    "AssocGrpGRES": "its account's GPU (GRES) limit is reached",
    "AssocGrpCpuLimit": "its account's CPU limit is reached",
    "AssocMaxJobsLimit": "its account already runs the most jobs it may",
    "QOSMaxGRESPerUser": "its owner's GPU limit in this QOS is reached",
    "QOSMaxJobsPerUserLimit": "its owner already runs the most jobs this QOS allows",
    "QOSGrpGRES": "the QOS's GPU limit is reached",
    "Reservation": "waiting for its reservation to start",
    "InvalidAccount": "its account is invalid",
    "InvalidQOS": "its QOS is invalid",
    "NodeDown": "a node it needs is down",
    "launch failed requeued held": "its launch failed; Slurm requeued and held it",
}


def explain(reason: str) -> str:
    """Plain words for a reason code; unknown codes are shown as they are."""
    if reason in REASONS:
        return REASONS[reason]
    base = reason.split(",")[0].split("(")[0].strip()
    return REASONS.get(base, f"Slurm says {reason}")
