"""The ``slurm_*`` series of a :class:`SlurmSnapshot`: :func:`slurm_series`, the one
mapping the controller's ``/metrics`` (:class:`SlurmMetricsCollector`, a custom collector:
families are computed from the latest snapshot on each scrape; no global registry is
touched) and the control plane's embedded store (``gpuwarden.metrics.ingest``) share.

Names follow vpenso/prometheus-slurm-exporter (its ``development`` branch, the newest)
where it has one, with its meaning, so existing Slurm dashboards and alerts work: every
series it exports has the same name, labels and value here (``slurm_queue_pending`` counts
dependency-pending jobs too, ``slurm_node_cpu_*`` carry the node's ``status``,
``slurm_gpus_idle`` counts the unallocated GPUs of idle and allocated nodes as its
``sinfo --state=idle,allocated`` does). One difference: where vpenso leaves out a per-user,
per-account or per-partition series whose value is 0, gpuwarden exports the 0. The rest is
gpuwarden's own and passes ``promtool check metrics``: per-node state and GPUs, GPUs a job
can get now (``slurm_gpus_free``) or cannot (``slurm_gpus_unusable``), pending jobs by
reason code (``slurm_jobs_pending``), collector health.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gpuwarden.gpu.series import (
    NO_LABELS,
    MetricSpec,
    SeriesGroup,
    catalogue,
    metric_families,
)
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmSnapshot

# Node base state -> vpenso's slurm_nodes_<suffix>.
NODE_STATE_GROUPS = {
    "allocated": "alloc",
    "completing": "comp",
    "down": "down",
    "drained": "drain",
    "draining": "drain",
    "drain": "drain",
    "error": "err",
    "fail": "fail",
    "failing": "fail",
    "idle": "idle",
    "maint": "maint",
    "mixed": "mix",
    "reserved": "resv",
}
NODE_GROUPS = ("alloc", "comp", "down", "drain", "err", "fail", "idle", "maint", "mix", "resv")

# Job state -> vpenso's slurm_queue_<suffix>.
QUEUE_STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUSPENDED": "suspended",
    "CANCELLED": "cancelled",
    "COMPLETING": "completing",
    "COMPLETED": "completed",
    "CONFIGURING": "configuring",
    "FAILED": "failed",
    "TIMEOUT": "timeout",
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node_fail",
    "OUT_OF_MEMORY": "out_of_memory",
    "BOOT_FAIL": "boot_fail",
    "DEADLINE": "deadline",
    "REQUEUED": "requeued",
}
QUEUE_NAMES = (*QUEUE_STATES.values(), "pending_dependency")

# (metric name, SchedulerStats attribute, help) — vpenso's sdiag names.
SCHEDULER_METRICS = (
    ("slurm_scheduler_threads", "server_thread_count", "slurmctld server threads"),
    ("slurm_scheduler_queue_size", "agent_queue_size", "slurmctld agent queue size"),
    ("slurm_scheduler_dbd_queue_size", "dbd_agent_queue_size", "DBD agent queue size"),
    ("slurm_scheduler_last_cycle", "last_cycle_us", "Main scheduler last cycle (us)"),
    ("slurm_scheduler_mean_cycle", "mean_cycle_us", "Main scheduler mean cycle (us)"),
    ("slurm_scheduler_cycle_per_minute", "cycles_per_minute", "Main scheduler cycles/min"),
    ("slurm_scheduler_backfill_last_cycle", "bf_last_cycle_us", "Backfill last cycle (us)"),
    ("slurm_scheduler_backfill_mean_cycle", "bf_mean_cycle_us", "Backfill mean cycle (us)"),
    ("slurm_scheduler_backfill_depth_mean", "bf_depth_mean", "Backfill mean depth"),
    ("slurm_scheduler_backfilled_jobs_since_start_total", "bf_backfilled_jobs",
     "Jobs started by backfill since slurmctld start"),
    ("slurm_scheduler_backfilled_jobs_since_cycle_total", "bf_backfilled_jobs_since_cycle",
     "Jobs started by backfill since the last stats reset"),
    ("slurm_scheduler_backfilled_heterogeneous_total", "bf_backfilled_het_jobs",
     "Heterogeneous job components started by backfill"),
)


# (per-node metric suffix, SlurmNode attribute, help): labels node
PER_NODE_METRICS = (
    ("gpus_alloc", "gpus_alloc", "GPUs allocated on the node"),
    ("gpus_free", "gpus_idle", "Unallocated GPUs on the node, if it accepts jobs"),
    ("gpus_unusable", "gpus_other", "Unallocated GPUs on the node, if it is down or drained"),
    ("gpus", "gpus_total", "GPUs configured on the node"),
)
# vpenso's per-node metrics: labels node and status (sinfo's StateLong)
NODE_STATUS_METRICS = (
    ("cpu_alloc", "cpus_alloc", "Allocated CPUs per node"),
    ("cpu_idle", "cpus_idle", "Idle CPUs per node"),
    ("cpu_other", "cpus_other", "Other CPUs per node"),
    ("cpu_total", "cpus_total", "Total CPUs per node"),
    ("mem_alloc", "alloc_memory_mb", "Allocated memory per node (MB)"),
    ("mem_total", "memory_mb", "Total memory per node (MB)"),
)
# (per-partition metric suffix, SlurmNode attribute summed over members, help)
PARTITION_METRICS = (
    ("cpus_allocated", "cpus_alloc", "CPUs allocated in the partition"),
    ("cpus_idle", "cpus_idle", "CPUs idle in the partition"),
    ("cpus_other", "cpus_other", "CPUs neither allocated nor idle in the partition"),
    ("cpus_total", "cpus_total", "CPUs in the partition"),
    ("gpus_alloc", "gpus_alloc", "GPUs allocated in the partition"),
    ("gpus_free", "gpus_idle", "Unallocated GPUs in the partition on nodes that accept jobs"),
    ("gpus_unusable", "gpus_other",
     "Unallocated GPUs in the partition on down or drained nodes"),
    ("gpus", "gpus_total", "GPUs in the partition"),
)
# (suffix, help) of vpenso's per-user and per-account metrics, values in this order
JOB_OWNER_METRICS = (
    ("jobs_pending", "Pending jobs"),
    ("jobs_running", "Running jobs"),
    ("jobs_suspended", "Suspended jobs"),
    ("cpus_running", "CPUs of the running jobs"),
    ("cpus_pending", "CPUs the pending jobs ask for"),
)
COMMANDS = ("squeue", "sinfo", "sdiag", "scontrol", "sacct", "sshare")  # errors counted


# Every name vpenso/prometheus-slurm-exporter exports (development branch), each kept here
# with its meaning and type; a few are gauges that end in _total, which promtool flags (and
# gpuwarden keeps: renaming them would break the dashboards they exist for).
VPENSO_NAMES = frozenset({
    *(f"slurm_nodes_{group}" for group in NODE_GROUPS),
    *(f"slurm_cpus_{key}" for key in ("alloc", "idle", "other", "total")),
    *(f"slurm_gpus_{key}" for key in ("alloc", "idle", "other", "total", "utilization")),
    *(f"slurm_node_{key}" for key in ("cpu_alloc", "cpu_idle", "cpu_other", "cpu_total",
                                      "mem_alloc", "mem_total")),
    *(f"slurm_partition_{key}" for key in ("cpus_allocated", "cpus_idle", "cpus_other",
                                           "cpus_total", "jobs_pending")),
    *(f"slurm_queue_{key}" for key in ("pending", "pending_dependency", "running",
                                       "suspended", "cancelled", "completing", "completed",
                                       "configuring", "failed", "timeout", "preempted",
                                       "node_fail")),
    *(name for name, _, _ in SCHEDULER_METRICS),
    *(f"slurm_{owner}_{key}" for owner in ("user", "account")
      for key in ("jobs_pending", "jobs_running", "jobs_suspended", "cpus_running",
                  "cpus_pending")),
    "slurm_account_fairshare",
})


def _g(name: str, help_: str) -> MetricSpec:
    return MetricSpec(name, "gauge", help_)


SLURM_METRICS: dict[str, MetricSpec] = catalogue(
    _g("slurm_up", "1 when every Slurm command of the last cycle succeeded"),
    _g("slurm_collector_duration_seconds", "Duration of the last collector cycle"),
    _g("slurm_collector_timestamp_seconds", "When the last cycle ran (unix time)"),
    _g("slurm_collector_last_success_timestamp_seconds",
       "When a cycle last succeeded completely (unix time)"),
    MetricSpec("slurm_collector_errors_total", "counter", "Failed Slurm commands by command"),
    _g("slurm_collector_command_duration_seconds",
       "Time spent in each Slurm command in the last cycle"),
    *(_g(f"slurm_nodes_{group}", f"Nodes in state {group}") for group in NODE_GROUPS),
    _g("slurm_nodes_other", "Nodes in no other slurm_nodes_* state"),
    _g("slurm_nodes", "Nodes"),
    *(_g(f"slurm_cpus_{attr}", f"CPUs {attr}") for attr in ("alloc", "idle", "other", "total")),
    _g("slurm_gpus_alloc", "GPUs allocated to jobs"),
    _g("slurm_gpus_idle", "Unallocated GPUs on idle nodes and on nodes with allocated CPUs "
       "(vpenso's: sinfo --state=idle,allocated)"),
    _g("slurm_gpus_other", "GPUs neither allocated nor idle (total - alloc - idle)"),
    _g("slurm_gpus_total", "GPUs configured"),
    _g("slurm_gpus_free", "Unallocated GPUs on nodes that accept jobs now"),
    _g("slurm_gpus_unusable", "Unallocated GPUs on down, drained or not responding nodes"),
    _g("slurm_gpus_utilization", "Allocated / total GPUs"),
    _g("slurm_node_state", "Node state and reason (value 1)"),
    _g("slurm_node_reason_timestamp_seconds", "When the node's reason was set (unix time)"),
    *(_g(f"slurm_node_{key}", help_) for key, _, help_ in PER_NODE_METRICS),
    *(_g(f"slurm_node_{key}", help_) for key, _, help_ in NODE_STATUS_METRICS),
    *(_g(f"slurm_partition_{key}", help_) for key, _, help_ in PARTITION_METRICS),
    _g("slurm_partition_nodes", "Nodes in the partition"),
    *(_g(f"slurm_queue_{name}", f"Jobs in state {name}") for name in QUEUE_NAMES),
    _g("slurm_jobs_pending", "Pending jobs by reason code"),
    _g("slurm_jobs", "Jobs by state, partition and user"),
    *(_g(f"slurm_user_{key}", f"{help_} of the user") for key, help_ in JOB_OWNER_METRICS),
    _g("slurm_user_gpus_running", "GPUs of the user's running jobs"),
    *(_g(f"slurm_account_{key}", f"{help_} of the account")
      for key, help_ in JOB_OWNER_METRICS),
    _g("slurm_account_fairshare", "FairShare of the account (sshare)"),
    _g("slurm_partition_jobs_pending", "Pending jobs in the partition"),
    _g("slurm_partition_jobs_running", "Running jobs in the partition"),
    *(_g(name, help_) for name, _, help_ in SCHEDULER_METRICS),
)

_NODE_NAMES = tuple(f"slurm_node_{key}" for key, _, _ in PER_NODE_METRICS)
_NODE_STATUS_NAMES = tuple(f"slurm_node_{key}" for key, _, _ in NODE_STATUS_METRICS)
_NODE_REASON_TS = "slurm_node_reason_timestamp_seconds"
_PARTITION_NAMES = (*(f"slurm_partition_{key}" for key, _, _ in PARTITION_METRICS),
                    "slurm_partition_nodes")
_STATE, _ONE = ("slurm_node_state",), (1.0,)
_REASON = ("slurm_jobs_pending",)
_JOBS = ("slurm_jobs",)
_USER_NAMES = (*(f"slurm_user_{key}" for key, _ in JOB_OWNER_METRICS),
               "slurm_user_gpus_running")
_ACCOUNT_NAMES = tuple(f"slurm_account_{key}" for key, _ in JOB_OWNER_METRICS)
# job state -> (index of its job count, index of its CPUs or None) in JOB_OWNER_METRICS
_OWNER_SLOTS = {"PENDING": (0, 4), "RUNNING": (1, 3), "SUSPENDED": (2, None)}
_FAIRSHARE = ("slurm_account_fairshare",)


class SlurmMetricsCollector(Collector):
    """``registry.register(SlurmMetricsCollector(collector.latest))``: the families of
    :func:`slurm_series`, the mapping the control plane's ingest uses too."""

    def __init__(self, snapshot_source: Callable[[], SlurmSnapshot | None]) -> None:
        self._source = snapshot_source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        if snapshot is None:
            return
        yield from metric_families(slurm_series(snapshot), SLURM_METRICS)


def slurm_series(snapshot: SlurmSnapshot,
                 base: Mapping[str, str] = NO_LABELS) -> list[SeriesGroup]:
    """Every ``slurm_*`` series of a snapshot, at the time of its cycle, one group per label
    set; ``base`` labels go on every series that has no label of that name itself (the
    scraper's ``node``: ``slurm_node_state{node=...}`` keeps the Slurm node's name, as a
    Prometheus with ``honor_labels`` keeps it)."""
    ts = snapshot.collected_at
    names: list[str] = ["slurm_up", "slurm_collector_duration_seconds",
                        "slurm_collector_timestamp_seconds"]
    values: list[float] = [1.0 if snapshot.up else 0.0, snapshot.duration_s,
                           snapshot.collected_at]
    if snapshot.last_success is not None:
        names.append("slurm_collector_last_success_timestamp_seconds")
        values.append(snapshot.last_success)
    out = [SeriesGroup(dict(base), ts, names, values)]
    append = out.append
    durations = snapshot.command_durations
    for command in sorted({*COMMANDS, *durations}):
        cnames, cvalues = [], []
        if command in COMMANDS:
            cnames.append("slurm_collector_errors_total")
            cvalues.append(float(snapshot.error_counts.get(command, 0)))
        if command in durations:
            cnames.append("slurm_collector_command_duration_seconds")
            cvalues.append(durations[command])
        append(SeriesGroup({**base, "command": command}, ts, cnames, cvalues))
    by_partition: dict[str, tuple[list[str], list[float]]] = {}
    if snapshot.has_nodes:
        _node_series(snapshot, base, ts, names, values, out, by_partition)
    if snapshot.has_jobs:
        _job_series(snapshot.queue_jobs, base, ts, names, values, out, by_partition)
    for part, (pnames, pvalues) in by_partition.items():
        append(SeriesGroup({**base, "partition": part}, ts, pnames, pvalues))
    if snapshot.stats is not None:
        for name, attr, _ in SCHEDULER_METRICS:
            names.append(name)
            values.append(float(getattr(snapshot.stats, attr)))
    for account, fairshare in sorted(snapshot.fairshare.items()):
        append(SeriesGroup({**base, "account": account}, ts, _FAIRSHARE, (fairshare,)))
    return out


def _node_series(snapshot: SlurmSnapshot, base: Mapping[str, str], ts: float,
                 names: list[str], values: list[float], out: list[SeriesGroup],
                 by_partition: dict[str, tuple[list[str], list[float]]]) -> None:
    nodes = snapshot.nodes
    groups = Counter(node_group(n) for n in nodes)
    for group in NODE_GROUPS:
        names.append(f"slurm_nodes_{group}")
        values.append(groups.get(group, 0))
    names += ["slurm_nodes_other", "slurm_nodes"]
    values += [sum(v for k, v in groups.items() if k is None), len(nodes)]
    for attr in ("alloc", "idle", "other", "total"):
        names.append(f"slurm_cpus_{attr}")
        values.append(sum(getattr(n, f"cpus_{attr}") for n in nodes))
    total = sum(n.gpus_total for n in nodes)
    # vpenso's: GresUsed of `sinfo --state=allocated`, Gres - GresUsed of
    # `sinfo --state=idle,allocated`, and the rest
    listed = [n for n in nodes if n.sinfo_idle_or_allocated]
    vp_alloc = sum(n.gpus_alloc for n in listed if n.cpus_alloc)
    vp_idle = sum(n.gpus_total - n.gpus_alloc for n in listed)
    names += ["slurm_gpus_alloc", "slurm_gpus_idle", "slurm_gpus_other", "slurm_gpus_total",
              "slurm_gpus_utilization", "slurm_gpus_free", "slurm_gpus_unusable"]
    values += [vp_alloc, vp_idle, total - vp_alloc - vp_idle, total,
               vp_alloc / total if total else 0.0,
               sum(n.gpus_idle for n in nodes), sum(n.gpus_other for n in nodes)]
    append = out.append
    for node in nodes:
        labels = {**base, "node": node.name}
        append(SeriesGroup({**labels, "state": node.state, "reason": node.reason}, ts,
                           _STATE, _ONE))
        nnames: Sequence[str] = _NODE_NAMES
        nvalues = [float(getattr(node, attr)) for _, attr, _ in PER_NODE_METRICS]
        if node.reason_time is not None:
            nnames = (_NODE_REASON_TS, *_NODE_NAMES)
            nvalues.insert(0, node.reason_time)
        append(SeriesGroup(labels, ts, nnames, nvalues))
        append(SeriesGroup({**labels, "status": node.sinfo_state}, ts, _NODE_STATUS_NAMES,
                           [float(getattr(node, attr)) for _, attr, _ in NODE_STATUS_METRICS]))
    by_name = {n.name: n for n in nodes}
    for part in snapshot.partitions:
        members = [by_name[n] for n in part.nodes if n in by_name]
        pnames, pvalues = by_partition.setdefault(part.name, ([], []))
        pnames += _PARTITION_NAMES
        pvalues += [float(sum(getattr(n, attr) for n in members))
                    for _, attr, _ in PARTITION_METRICS]
        pvalues.append(float(len(members)))


def node_group(node: SlurmNode) -> str | None:
    return NODE_STATE_GROUPS.get(node.state)


def _job_series(jobs: tuple[SlurmJob, ...], base: Mapping[str, str], ts: float,
                names: list[str], values: list[float], out: list[SeriesGroup],
                by_partition: dict[str, tuple[list[str], list[float]]]) -> None:
    # a job pending for a dependency counts in both pending and pending_dependency, as
    # vpenso's does
    queue = Counter(QUEUE_STATES.get(j.state) for j in jobs)
    queue["pending_dependency"] = sum(j.is_pending and j.reason == "Dependency" for j in jobs)
    for name in QUEUE_NAMES:
        names.append(f"slurm_queue_{name}")
        values.append(queue.get(name, 0))
    append = out.append
    reasons = Counter(j.reason for j in jobs if j.is_pending)
    for reason, count in sorted(reasons.items()):
        append(SeriesGroup({**base, "reason": reason}, ts, _REASON, (float(count),)))
    by_spu = Counter((j.state.lower(), j.partition, j.user) for j in jobs)
    for (state, part, user), count in sorted(by_spu.items()):
        append(SeriesGroup({**base, "state": state, "partition": part, "user": user}, ts,
                           _JOBS, (float(count),)))
    # values in the order of JOB_OWNER_METRICS, then (users only) GPUs running
    per_user: dict[str, list[float]] = {}
    per_account: dict[str, list[float]] = {}
    for j in jobs:
        user = per_user.get(j.user)
        if user is None:
            user = per_user[j.user] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        account = per_account.get(j.account)
        if account is None:
            account = per_account[j.account] = [0.0, 0.0, 0.0, 0.0, 0.0]
        slots = _OWNER_SLOTS.get(j.state)
        if slots is None:
            continue
        jobs_slot, cpus_slot = slots
        for row in (user, account):
            row[jobs_slot] += 1
            if cpus_slot is not None:
                row[cpus_slot] += j.num_cpus
        if j.is_running:
            user[5] += j.gpus_allocated
    for name in sorted(per_user):
        append(SeriesGroup({**base, "user": name}, ts, _USER_NAMES, per_user[name]))
    for name in sorted(per_account):
        if name:  # a job without an account (no accounting) counts in no account
            append(SeriesGroup({**base, "account": name}, ts, _ACCOUNT_NAMES,
                               per_account[name]))
    # vpenso's: a job pending in several partitions ("gpu,cpu") counts in none of them
    # (slurm_jobs{partition="gpu,cpu"} has it)
    pend = Counter(j.partition for j in jobs if j.is_pending)
    run = Counter(j.partition for j in jobs if j.is_running)
    for part in sorted({p for j in jobs for p in j.partition.split(",") if p}):
        pnames, pvalues = by_partition.setdefault(part, ([], []))
        pnames += ("slurm_partition_jobs_pending", "slurm_partition_jobs_running")
        pvalues += (float(pend.get(part, 0)), float(run.get(part, 0)))
