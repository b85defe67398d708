"""The internal Slurm model every parser converts into and everything above reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from gpuwarden.slurm.gres import GresItem, gpu_count, gpus_in_tres
from gpuwarden.slurm.reasons import explain

USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
# job states in which a job is on its nodes (holds them)
ACTIVE_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING"})


def jobs_on(jobs: Iterable[SlurmJob], node: str) -> list[str]:
    """The ids of the jobs that hold ``node`` now: the one test before a node is stopped,
    replaced or checked."""
    return [str(j.job_id) for j in jobs if j.state in ACTIVE_STATES and node in j.nodes]


# A job in one of these has ended; its exit code, end and elapsed time are final.
FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                             "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"})
# the queue counts (``SlurmSnapshot.queue``): Slurm's state -> the count's name
QUEUE_KEYS: Mapping[str, str] = MappingProxyType({
    "RUNNING": "running", "PENDING": "pending", "COMPLETING": "completing",
    "COMPLETED": "completed", "FAILED": "failed", "CANCELLED": "cancelled",
    "TIMEOUT": "timeout", "SUSPENDED": "suspended", "NODE_FAIL": "node_fail",
    "OUT_OF_MEMORY": "out_of_memory", "PREEMPTED": "preempted"})
JobSource = str  # "squeue" (the controller's queue) or "sacct" (slurmdbd's records)
NO_GPU_DETAIL: Mapping[str, tuple[int, ...]] = MappingProxyType({})


def _empty_map() -> Mapping[str, tuple[int, ...]]:
    return NO_GPU_DETAIL  # shared and read-only: no allocation per job


@dataclass(slots=True)
class SlurmJob:
    """One job (or one array task). ``state`` is Slurm's long upper-case state
    (``PENDING``, ``RUNNING``, ...); ``reason`` is the reason code (``Resources``,
    ``Priority``, ``None``...).

    Read-only by convention: not ``frozen`` only because a frozen dataclass is ~10x slower
    to build and a collector cycle builds one per job (10,000+ on a busy cluster); derive
    changed copies with ``dataclasses.replace``.
    """

    job_id: int
    name: str
    user: str
    partition: str
    state: str
    reason: str = "None"
    nodes: tuple[str, ...] = ()
    num_nodes: int = 0
    num_cpus: int = 0
    comment: str = ""
    array_job_id: int | None = None
    array_task_id: str | None = None
    tres_per_node: str = ""
    tres_per_job: str = ""
    tres_per_task: str = ""
    submit_time: float | None = None
    start_time: float | None = None
    time_limit_s: int | None = None
    priority: int | None = None
    gpu_detail: Mapping[str, tuple[int, ...]] = field(default_factory=_empty_map)
    """GPU indices held on each node (running jobs, from gres_detail)."""
    end_time: float | None = None
    """When it ended (finished jobs; squeue's expected end for running ones is not kept)."""
    exit_code: int | None = None
    """The batch script's exit status (``ExitCode=1:0`` -> 1); None when unknown."""
    signal: int | None = None
    """The signal that ended it (``ExitCode=0:9`` -> 9); 0 when none; None when unknown."""
    elapsed_s: int | None = None
    account: str = ""
    qos: str = ""
    """The QOS it runs under (squeue; empty where Slurm gives none)."""
    alloc_gpus: int | None = None
    """GPUs the job was given (``AllocTRES`` ``gres/gpu=N``, accounting only)."""
    source: JobSource = "squeue"
    """Where this record's facts come from: ``squeue`` or ``sacct``."""

    @property
    def is_running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def is_pending(self) -> bool:
        return self.state == "PENDING"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def reason_text(self) -> str | None:
        """The pending reason in plain words (None unless pending)."""
        return explain(self.reason) if self.is_pending else None

    @property
    def key(self) -> str:
        """Unique per job and per array task: ``7`` or ``7_3`` (what ``scontrol``,
        ``squeue -j`` and ``sacct -j`` accept)."""
        if self.array_job_id and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return str(self.job_id)

    @property
    def gpus_requested(self) -> int:
        """GPUs the job asked for (per-node requests times node count, or per-job)."""
        per_job = gpus_in_tres(self.tres_per_job)
        if per_job:
            return per_job
        per_node = gpus_in_tres(self.tres_per_node)
        if per_node:
            return per_node * max(self.num_nodes, 1)
        return 0

    @property
    def gpus_allocated(self) -> int:
        """GPUs held now: from gres_detail when known, else the request (running only)."""
        if not self.is_running:
            return 0
        if self.gpu_detail:
            return sum(len(ix) for ix in self.gpu_detail.values())
        return self.gpus_requested


@dataclass(frozen=True)
class SlurmNode:
    """One node. ``state`` is the base state in lower case (``idle``, ``mixed``,
    ``allocated``, ``down``, ``drained``, ``draining``, ``completing``...), ``flags`` the
    rest (``DRAIN``, ``NOT_RESPONDING``, ``RESERVED``...), ``state_raw`` as Slurm wrote it."""

    name: str
    state: str
    state_raw: str = ""
    flags: tuple[str, ...] = ()
    reason: str = ""
    reason_time: float | None = None
    reason_user: str = ""
    partitions: tuple[str, ...] = ()
    cpus_alloc: int = 0
    cpus_idle: int = 0
    cpus_other: int = 0
    cpus_total: int = 0
    memory_mb: int = 0
    alloc_memory_mb: int = 0
    gres: tuple[GresItem, ...] = ()
    gres_used: tuple[GresItem, ...] = ()

    @property
    def gpus_total(self) -> int:
        return gpu_count(self.gres)

    @property
    def gpus_alloc(self) -> int:
        return gpu_count(self.gres_used)

    @property
    def usable(self) -> bool:
        """Can take new jobs: up, responding, not drained or draining."""
        return (self.state in USABLE_STATES and "NOT_RESPONDING" not in self.flags
                and "DRAIN" not in self.flags)

    @property
    def gpus_unallocated(self) -> int:
        return max(self.gpus_total - self.gpus_alloc, 0)

    @property
    def gpus_idle(self) -> int:
        """Unallocated GPUs a job could get now (0 on a down/drained node)."""
        return self.gpus_unallocated if self.usable else 0

    @property
    def gpus_other(self) -> int:
        """Unallocated GPUs no job can get (down, drained, not responding)."""
        return 0 if self.usable else self.gpus_unallocated

    @property
    def sinfo_state(self) -> str:
        """The state as sinfo's StateLong prints it (``mixed``, ``down*``, ``drained``):
        what the format shape read; from a JSON shape (whose ``state_raw`` is
        ``MIXED+DRAIN``), the base state with ``*`` when not responding."""
        if self.state_raw and self.state_raw == self.state_raw.lower():
            return self.state_raw
        return self.state + ("*" if "NOT_RESPONDING" in self.flags else "")

    @property
    def sinfo_idle_or_allocated(self) -> bool:
        """Listed by ``sinfo --states=idle,allocated`` (Slurm 22.05): CPUs allocated to
        jobs (draining nodes too), or idle with no flag but not responding."""
        return self.cpus_alloc > 0 or (self.state == "idle"
                                       and set(self.flags) <= {"NOT_RESPONDING"})

    @property
    def gpu_types(self) -> tuple[str, ...]:
        return tuple(sorted({g.type for g in self.gres if g.is_gpu and g.type}))


@dataclass(frozen=True)
class SlurmPartition:
    """One partition; ``nodes`` are the member node names."""

    name: str
    available: str = "up"
    default: bool = False
    nodes: tuple[str, ...] = ()
    time_limit: str = ""


@dataclass(frozen=True)
class SchedulerStats:
    """What ``sdiag`` reports (cycle times in microseconds, as Slurm gives them)."""

    server_thread_count: int = 0
    agent_queue_size: int = 0
    agent_count: int = 0
    agent_thread_count: int = 0
    dbd_agent_queue_size: int = 0
    jobs_submitted: int = 0
    jobs_started: int = 0
    jobs_completed: int = 0
    jobs_canceled: int = 0
    jobs_failed: int = 0
    jobs_pending: int = 0
    jobs_running: int = 0
    last_cycle_us: int = 0
    max_cycle_us: int = 0
    total_cycles: int = 0
    mean_cycle_us: int = 0
    mean_depth_cycle: int = 0
    cycles_per_minute: int = 0
    last_queue_length: int = 0
    bf_backfilled_jobs: int = 0
    bf_backfilled_jobs_since_cycle: int = 0
    bf_backfilled_het_jobs: int = 0
    bf_total_cycles: int = 0
    bf_last_cycle_us: int = 0
    bf_max_cycle_us: int = 0
    bf_mean_cycle_us: int = 0
    bf_last_depth_cycle: int = 0
    bf_last_depth_cycle_try: int = 0
    bf_depth_mean: int = 0
    bf_depth_mean_try: int = 0
    bf_last_queue_length: int = 0
    bf_queue_length_mean: int = 0
    bf_last_table_size: int = 0
    bf_table_size_mean: int = 0
    collected_at: float | None = None
    stats_since: float | None = None


@dataclass(frozen=True)
class NodeInfo:
    """What one ``sinfo`` call yields: nodes and the partitions they belong to."""

    nodes: tuple[SlurmNode, ...]
    partitions: tuple[SlurmPartition, ...]


@dataclass(frozen=True)
class SlurmSnapshot:
    """One collector cycle. A part whose command failed is empty and named in ``errors``."""

    collected_at: float
    duration_s: float
    up: bool
    jobs: tuple[SlurmJob, ...] = ()
    nodes: tuple[SlurmNode, ...] = ()
    partitions: tuple[SlurmPartition, ...] = ()
    stats: SchedulerStats | None = None
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    error_counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    command_durations: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    last_success: float | None = None
    accounting: bool = False
    """slurmdbd answers: finished jobs come from ``sacct`` (else from squeue alone, for as
    long as slurmctld keeps them: ``MinJobAge``)."""
    accounting_window_s: float | None = None
    """How far back finished jobs from sacct reach (None without accounting)."""
    listed: frozenset[int] = frozenset()
    """Ids of the jobs squeue listed in this cycle (some of them carry sacct's record)."""
    fairshare: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """FairShare by account, as ``sshare`` tells it (empty without accounting)."""
    interval_s: float | None = None
    """Seconds between the collector's cycles: how old a snapshot gets before the next one
    replaces it (readers judging staleness add it to their own allowance)."""

    @property
    def has_jobs(self) -> bool:
        return "squeue" not in self.errors

    @property
    def queue_jobs(self) -> tuple[SlurmJob, ...]:
        """The jobs slurmctld holds now (what squeue listed), without the older finished
        jobs only sacct still knows: what queue metrics count, as prometheus-slurm-exporter
        does."""
        if not self.accounting:
            return self.jobs
        return tuple(j for j in self.jobs if j.source == "squeue" or j.job_id in self.listed)

    # Derived figures, one definition each: the controller's ``/api/v1/slurm`` document
    # writes them (``slurm.wire.encode_summary``) and the control plane's views read them off
    # the decoded snapshot, so the two cannot disagree.  Computed once per snapshot.

    @cached_property
    def queue(self) -> Mapping[str, int]:
        """Jobs per state (every ``QUEUE_KEYS`` name, 0 when none): ``running``,
        ``pending``, ..."""
        counts = dict.fromkeys(QUEUE_KEYS.values(), 0)
        for job in self.jobs:
            key = QUEUE_KEYS.get(job.state)
            if key:
                counts[key] += 1
        return MappingProxyType(counts)

    @cached_property
    def pending_reasons(self) -> Mapping[str, int]:
        """Pending jobs per reason code (``Resources``, ``Priority``...)."""
        return MappingProxyType(dict(Counter(j.reason for j in self.jobs if j.is_pending)))

    @cached_property
    def gpus_total(self) -> int:
        return sum(n.gpus_total for n in self.nodes)

    @cached_property
    def gpus_alloc(self) -> int:
        return sum(n.gpus_alloc for n in self.nodes)

    @cached_property
    def gpus_idle(self) -> int:
        return sum(n.gpus_idle for n in self.nodes)

    @property
    def finished_source(self) -> JobSource:
        """Where this snapshot's finished jobs come from."""
        return "sacct" if self.accounting else "squeue"

    @property
    def has_nodes(self) -> bool:
        return "sinfo" not in self.errors

    def node(self, name: str) -> SlurmNode | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def job(self, job_id: int) -> SlurmJob | None:
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        return None

    def missing_job_text(self, job_id: object) -> str:
        """Why ``job_id`` is not in this snapshot (:func:`not_found_text`)."""
        return not_found_text(job_id, {"available": self.accounting,
                                       "window_s": self.accounting_window_s})


def not_found_text(job_id: object, accounting: Mapping[str, Any]) -> str:
    """Why a job is not there, true to where finished jobs come from."""
    if accounting.get("available"):
        hours = (accounting.get("window_s") or 0) / 3600
        return (f"no job {job_id} in Slurm's queue nor in its accounting of the last "
                f"{hours:g} h")
    return (f"no job {job_id} in Slurm's queue; this cluster keeps no accounting, so a "
            "finished job is known only until slurmctld forgets it (MinJobAge)")
