"""Slurm's job reason codes, each with the kind of wait it is and plain words for it: the one
table the API (``reason_text``), the web UI, the watchdog and the ops agent read (Slurm's
"Job Reason Codes" page and squeue(1) "JOB REASON CODES"; the codes are Slurm's, the words
ours).

The families of limit codes (``AssocGrpGRES``, ``QOSMaxGRESPerUser``, ``MaxCpuPerAccount``,
...) are many and regular: the common ones are in the table, the rest are read from their
name (scope, aggregate or maximum, resource, per what) so every limit code Slurm can give
gets an explanation, not "unknown".

``squeue`` may add detail after the code (``ReqNodeNotAvail, UnavailableNodes:node[3-4]``,
``launch failed requeued held``): :func:`split_reason` separates the code from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kinds of wait, in the order a reader cares about them
SCHEDULING = "scheduling"  # not looked at yet / being scheduled
RESOURCES = "resources"  # what it asks for is in use
PRIORITY = "priority"  # others go first
DEPENDENCY = "dependency"  # waits for other jobs
NEVER = "never"  # will never start as it is
HELD = "held"  # held by its user or an admin
BEGIN = "begin"  # --begin time not reached
NODES = "nodes"  # a node it needs is unavailable
PARTITION = "partition"  # its partition forbids or cannot run it
LIMIT = "limit"  # an association or QOS limit
RESERVATION = "reservation"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    kind: str
    text: str
    detail: str = ""  # what squeue printed after the code

    @property
    def waits(self) -> bool:
        """The job starts by itself once the condition clears (no one has to act)."""
        return self.kind in (SCHEDULING, RESOURCES, PRIORITY, DEPENDENCY, BEGIN, LIMIT,
                             RESERVATION)


REASONS: dict[str, tuple[str, str]] = {
    # not scheduled yet
    "None": (SCHEDULING, "no reason given yet: the scheduler has not evaluated the job"),
    "WaitingForScheduling": (SCHEDULING, "waiting for the scheduler to evaluate it"),
    "Prolog": (SCHEDULING, "its prolog is running"),
    "Configuring": (SCHEDULING, "its nodes are being configured (booting or powering up)"),
    "PowerUpNode": (SCHEDULING, "a node it was given is powering up"),
    "Cleaning": (SCHEDULING, "it was requeued and Slurm is still cleaning up its last run"),
    # resources and priority
    "Resources": (RESOURCES, "the nodes, GPUs, CPUs or memory it asks for are in use"),
    "Priority": (PRIORITY, "one or more higher-priority jobs in its partition (or "
                           "reservation) go first"),
    "Licenses": (RESOURCES, "the licenses it asks for are in use"),
    "BurstBufferResources": (RESOURCES, "the burst buffer space it asks for is in use"),
    "BurstBufferStageIn": (SCHEDULING, "its burst buffer is staging data in"),
    # other jobs
    "Dependency": (DEPENDENCY, "it waits for a job it depends on (--dependency) to reach "
                               "the required state"),
    "DependencyNeverSatisfied": (NEVER, "a job it depends on ended in a way that can never "
                                        "satisfy the dependency: it will never start; cancel "
                                        "it or change its dependency"),
    # holds
    "JobHeldUser": (HELD, "held by its owner: it will not start until released "
                          "(scontrol release)"),
    "JobHeldAdmin": (HELD, "held by an administrator: only an administrator (operator) can "
                           "release it"),
    "launch failed requeued held": (HELD, "its launch failed; Slurm requeued and held it: "
                                          "check the node it tried, then release it"),
    "JobHoldMaxRequeue": (HELD, "held after being requeued too many times (MaxBatchRequeue)"),
    # time
    "BeginTime": (BEGIN, "its earliest start time (--begin) has not come yet"),
    "StartTime": (BEGIN, "its earliest start time has not come yet"),
    # nodes
    "ReqNodeNotAvail": (NODES, "a node it needs is not available (down, drained, reserved "
                               "for others, or not responding)"),
    "NodeDown": (NODES, "a node it needs is down"),
    "BadConstraints": (NEVER, "no node can satisfy its constraints (--constraint, --gres, "
                              "memory, CPUs): it cannot start as asked"),
    "FrontEndDown": (NODES, "no front end node is available to run it"),
    "InvalidNodeName": (NEVER, "it names a node that does not exist"),
    # partition
    "PartitionDown": (PARTITION, "its partition is down"),
    "PartitionInactive": (PARTITION, "its partition is inactive: it cannot start jobs"),
    "PartitionNodeLimit": (PARTITION, "it asks for more (or fewer) nodes than its "
                                      "partition's MaxNodes/MinNodes allow, or than the "
                                      "partition has"),
    "PartitionTimeLimit": (PARTITION, "its time limit is above its partition's MaxTime"),
    "PartitionConfig": (PARTITION, "it asks for something its partition does not offer "
                                   "(CPUs, memory, nodes)"),
    "AccountNotAllowed": (PARTITION, "its account may not use this partition"),
    "QOSNotAllowed": (PARTITION, "its QOS may not use this partition"),
    "InactiveLimit": (OTHER, "it reached the system's InactiveLimit"),
    # accounting
    "InvalidAccount": (NEVER, "its account is invalid: it cannot start; resubmit with a "
                              "valid --account"),
    "InvalidQOS": (NEVER, "its QOS is invalid: it cannot start; resubmit with a valid --qos"),
    "AccountingPolicy": (LIMIT, "an accounting policy limit applies to it"),
    "AssociationJobLimit": (LIMIT, "its association's job count limit is reached"),
    "AssociationResourceLimit": (LIMIT, "its association's resource limit is reached"),
    "AssociationTimeLimit": (LIMIT, "its association's time limit is reached"),
    "QOSJobLimit": (LIMIT, "its QOS's job count limit is reached"),
    "QOSResourceLimit": (LIMIT, "its QOS's resource limit is reached"),
    "QOSTimeLimit": (LIMIT, "its QOS's time limit is reached"),
    "QOSUsageThreshold": (LIMIT, "its QOS's usage threshold (UsageThreshold) is exceeded"),
    "AssocGrpGRES": (LIMIT, "its association's aggregate GPU/GRES limit (GrpTRES) is "
                            "reached by its running jobs"),
    "AssocGrpCpuLimit": (LIMIT, "its association's aggregate CPU limit (GrpTRES cpu) is "
                                "reached"),
    "AssocGrpJobsLimit": (LIMIT, "its association already runs the most jobs it may "
                                 "(GrpJobs)"),
    "AssocMaxJobsLimit": (LIMIT, "its association already runs the most jobs it may "
                                 "(MaxJobs)"),
    "AssocMaxGRESPerJob": (LIMIT, "it asks for more GPUs/GRES than its association allows "
                                  "per job"),
    "QOSMaxGRESPerUser": (LIMIT, "its owner's GPU/GRES limit per user in its QOS "
                                 "(MaxTRESPerUser) is reached"),
    "QOSMaxGRESPerJob": (LIMIT, "it asks for more GPUs/GRES than its QOS allows per job"),
    "QOSGrpGRES": (LIMIT, "its QOS's aggregate GPU/GRES limit (GrpTRES) is reached"),
    "QOSMaxJobsPerUserLimit": (LIMIT, "its owner already runs the most jobs its QOS allows "
                                      "per user (MaxJobsPerUser)"),
    "QOSMaxSubmitJobPerUserLimit": (LIMIT, "its owner has submitted the most jobs its QOS "
                                           "allows per user"),
    # reservations
    "Reservation": (RESERVATION, "it waits for its advanced reservation to start"),
    "ReservationDeleted": (NEVER, "its reservation was deleted: it cannot start as asked"),
    # job end reasons (squeue and sacct show them on finished and requeued jobs)
    "NonZeroExitCode": (OTHER, "it exited with a non-zero exit code"),
    "RaisedSignal": (OTHER, "it was killed by a signal"),
    "TimeLimit": (OTHER, "it reached its time limit"),
    "OutOfMemory": (OTHER, "it ran out of memory"),
    "NodeFail": (OTHER, "a node it ran on failed"),
    "SystemFailure": (OTHER, "a failure of the Slurm system, the file system or the network"),
    "JobLaunchFailure": (OTHER, "Slurm could not launch it (file system, invalid program "
                                "name, ...)"),
    "BadConstraint": (NEVER, "no node can satisfy its constraints"),
}

_SCOPES = {"Assoc": "its association (user/account)", "QOS": "its QOS", "": "its QOS"}
_RESOURCES = {
    "Cpu": "CPU", "CPU": "CPU", "GRES": "GPU/GRES", "Mem": "memory", "Memory": "memory",
    "Node": "node", "Jobs": "running-job", "Job": "running-job", "SubmitJobs": "submitted-job",
    "SubmitJob": "submitted-job", "Wall": "wall-time", "WallDuration": "wall-time",
    "Billing": "billing", "Energy": "energy", "License": "license", "BB": "burst-buffer",
    "Unknown": "TRES",
}
_LIMIT = re.compile(r"^(Assoc|QOS|)(Grp|Max|Min)([A-Za-z]+?)(RunMinutes|Minutes|MinutesPer"
                    r"Job|PerUser|PerJob|PerNode|PerAccount|PerTask)?(Limit)?$")


def _limit_text(code: str) -> str | None:
    """Words for a limit code read from its name: scope, kind, resource, per what."""
    m = _LIMIT.match(code)
    if m is None:
        return None
    scope, kind, resource, per, _ = m.groups()
    if not scope and not per:
        return None  # "Max..." without a scope names a per-account/per-user QOS limit
    res = _RESOURCES.get(resource)
    if res is None:
        return None
    minutes = " (in CPU/TRES-minutes)" if per and "Minutes" in per else ""
    per_text = {"PerUser": " per user", "PerJob": " per job", "PerNode": " per node",
                "PerAccount": " per account", "PerTask": " per task",
                "MinutesPerJob": " per job"}.get(per or "", "")
    if kind == "Grp":
        return (f"{_SCOPES[scope]}'s aggregate {res} limit{minutes} is reached by its "
                "running jobs")
    if kind == "Min":
        return f"it asks for less {res} than {_SCOPES[scope]}'s minimum{per_text}"
    if per in ("PerJob", "PerNode", "PerTask", "MinutesPerJob"):
        return f"it asks for more {res}{per_text} than {_SCOPES[scope]} allows{minutes}"
    return f"{_SCOPES[scope]}'s maximum {res} limit{per_text}{minutes} is reached"


def split_reason(raw: str | None) -> tuple[str, str]:
    """``"ReqNodeNotAvail, UnavailableNodes:n[1-2]"`` -> (``ReqNodeNotAvail``,
    ``UnavailableNodes:n[1-2]``); ``"RaisedSignal:9(Killed)"`` -> (``RaisedSignal``,
    ``9(Killed)``)."""
    text = (raw or "").strip() or "None"
    if text in REASONS:
        return text, ""
    for sep in (",", ":", "("):
        if sep in text:
            head, _, rest = text.partition(sep)
            if head.strip() in REASONS or _limit_text(head.strip()):
                return head.strip(), rest.strip().rstrip(")") if sep == "(" else rest.strip()
    return text, ""


def reason(raw: str | None) -> Reason:
    """Slurm's reason (as squeue prints it) as a :class:`Reason`: every code gets a kind and
    words; a code this table does not know is shown as Slurm gave it."""
    code, detail = split_reason(raw)
    if code in REASONS:
        kind, text = REASONS[code]
        return Reason(code, kind, text, detail)
    limit = _limit_text(code)
    if limit is not None:
        return Reason(code, LIMIT, limit, detail)
    if code.startswith("Max") and code.endswith(("PerAccount", "PerAccountLimit")):
        return Reason(code, LIMIT, "its QOS's per-account limit is reached", detail)
    return Reason(code, OTHER, f"Slurm gives the reason {code!r} (not in gpuwarden's table; "
                               "see Slurm's job reason codes)", detail)


def explain(raw: str | None) -> str:
    """Plain words for a reason as squeue prints it."""
    return reason(raw).text
