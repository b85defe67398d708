"""Prometheus exposition of a :class:`SlurmSnapshot` (a custom collector: families are
computed from the latest snapshot on each scrape; no global registry is touched).

Names follow vpenso/prometheus-slurm-exporter where it has one, so existing Slurm
dashboards work; the rest is gpuwarden's (per-node state and GPUs, pending reason codes,
collector health).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class SlurmMetricsCollector(Collector):
    """``registry.register(SlurmMetricsCollector(collector.latest))``."""

    def __init__(self, snapshot_source: Callable[[], SlurmSnapshot | None]) -> None:
        self._source = snapshot_source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        if snapshot is None:
            return
        yield from collector_health(snapshot)
        if snapshot.has_nodes:
            yield from node_metrics(snapshot.nodes)
            yield from partition_node_metrics(snapshot)
        if snapshot.has_jobs:
            yield from job_metrics(snapshot.queue_jobs)
            yield from partition_job_metrics(snapshot.queue_jobs)
        if snapshot.stats is not None:
            for name, attr, doc in SCHEDULER_METRICS:
                yield _gauge(name, doc, float(getattr(snapshot.stats, attr)))


def collector_health(snapshot: SlurmSnapshot) -> Iterator[Metric]:
    yield _gauge("slurm_up", "1 when every Slurm command of the last cycle succeeded",
                 1.0 if snapshot.up else 0.0)
    yield _gauge("slurm_collector_duration_seconds", "Duration of the last collector cycle",
                 snapshot.duration_s)
    yield _gauge("slurm_collector_timestamp_seconds", "When the last cycle ran (unix time)",
                 snapshot.collected_at)
    if snapshot.last_success is not None:
        yield _gauge("slurm_collector_last_success_timestamp_seconds",
                     "When a cycle last succeeded completely (unix time)", snapshot.last_success)
    errors = CounterMetricFamily("slurm_collector_errors", "Failed Slurm commands by command",
                                 labels=["command"])
    for command in ("squeue", "sinfo", "sdiag", "scontrol", "sacct"):
        errors.add_metric([command], float(snapshot.error_counts.get(command, 0)))
    yield errors
    durations = GaugeMetricFamily("slurm_collector_command_duration_seconds",
                                  "Time spent in each Slurm command in the last cycle",
                                  labels=["command"])
    for command, seconds in sorted(snapshot.command_durations.items()):
        durations.add_metric([command], seconds)
    yield durations


def node_group(node: SlurmNode) -> str | None:
    return NODE_STATE_GROUPS.get(node.state)


def node_metrics(nodes: tuple[SlurmNode, ...]) -> Iterator[Metric]:
    groups = Counter(node_group(n) for n in nodes)
    for group in NODE_GROUPS:
        yield _gauge(f"slurm_nodes_{group}", f"Nodes in state {group}", groups.get(group, 0))
    yield _gauge("slurm_nodes_other", "Nodes in no other slurm_nodes_* state",
                 sum(v for k, v in groups.items() if k is None))
    yield _gauge("slurm_nodes_total", "Nodes", len(nodes))
    for attr in ("alloc", "idle", "other", "total"):
        yield _gauge(f"slurm_cpus_{attr}", f"CPUs {attr}",
                     sum(getattr(n, f"cpus_{attr}") for n in nodes))
    total = sum(n.gpus_total for n in nodes)
    alloc = sum(n.gpus_alloc for n in nodes)
    yield _gauge("slurm_gpus_alloc", "GPUs allocated to jobs", alloc)
    yield _gauge("slurm_gpus_idle", "Unallocated GPUs on nodes that accept jobs",
                 sum(n.gpus_idle for n in nodes))
    yield _gauge("slurm_gpus_other", "Unallocated GPUs on down, drained or failed nodes",
                 sum(n.gpus_other for n in nodes))
    yield _gauge("slurm_gpus_total", "GPUs configured", total)
    yield _gauge("slurm_gpus_utilization", "Allocated / total GPUs",
                 alloc / total if total else 0.0)

    state = GaugeMetricFamily("slurm_node_state", "Node state and reason (value 1)",
                              labels=["node", "state", "reason"])
    reason_ts = GaugeMetricFamily("slurm_node_reason_timestamp_seconds",
                                  "When the node's reason was set (unix time)", labels=["node"])
    per_node = {
        name: GaugeMetricFamily(f"slurm_node_{name}", doc, labels=["node"])
        for name, doc in (
            ("gpus_alloc", "GPUs allocated on the node"),
            ("gpus_idle", "Unallocated GPUs on the node, if it accepts jobs"),
            ("gpus_other", "Unallocated GPUs on the node, if it is down or drained"),
            ("gpus_total", "GPUs configured on the node"),
            ("cpu_alloc", "CPUs allocated on the node"),
            ("cpu_idle", "CPUs idle on the node"),
            ("cpu_other", "CPUs neither allocated nor idle on the node"),
            ("cpu_total", "CPUs on the node"),
        )
    }
    for node in nodes:
        state.add_metric([node.name, node.state, node.reason], 1.0)
        if node.reason_time is not None:
            reason_ts.add_metric([node.name], node.reason_time)
        for key, value in (
            ("gpus_alloc", node.gpus_alloc), ("gpus_idle", node.gpus_idle),
            ("gpus_other", node.gpus_other),
            ("gpus_total", node.gpus_total), ("cpu_alloc", node.cpus_alloc),
            ("cpu_idle", node.cpus_idle), ("cpu_other", node.cpus_other),
            ("cpu_total", node.cpus_total),
        ):
            per_node[key].add_metric([node.name], float(value))
    yield state
    yield reason_ts
    yield from per_node.values()


def partition_node_metrics(snapshot: SlurmSnapshot) -> Iterator[Metric]:
    by_name = {n.name: n for n in snapshot.nodes}
    fams = {
        key: GaugeMetricFamily(f"slurm_partition_{key}", doc, labels=["partition"])
        for key, doc in (
            ("cpus_allocated", "CPUs allocated in the partition"),
            ("cpus_idle", "CPUs idle in the partition"),
            ("cpus_other", "CPUs neither allocated nor idle in the partition"),
            ("cpus_total", "CPUs in the partition"),
            ("gpus_alloc", "GPUs allocated in the partition"),
            ("gpus_idle", "Unallocated GPUs in the partition on nodes that accept jobs"),
            ("gpus_other", "Unallocated GPUs in the partition on down or drained nodes"),
            ("gpus_total", "GPUs in the partition"),
            ("nodes", "Nodes in the partition"),
        )
    }
    for part in snapshot.partitions:
        members = [by_name[n] for n in part.nodes if n in by_name]
        values = {
            "cpus_allocated": sum(n.cpus_alloc for n in members),
            "cpus_idle": sum(n.cpus_idle for n in members),
            "cpus_other": sum(n.cpus_other for n in members),
            "cpus_total": sum(n.cpus_total for n in members),
            "gpus_alloc": sum(n.gpus_alloc for n in members),
            "gpus_idle": sum(n.gpus_idle for n in members),
            "gpus_other": sum(n.gpus_other for n in members),
            "gpus_total": sum(n.gpus_total for n in members),
            "nodes": len(members),
        }
        for key, value in values.items():
            fams[key].add_metric([part.name], float(value))
    yield from fams.values()


def queue_name(job: SlurmJob) -> str | None:
    if job.state == "PENDING" and job.reason == "Dependency":
        return "pending_dependency"
    return QUEUE_STATES.get(job.state)


def job_metrics(jobs: tuple[SlurmJob, ...]) -> Iterator[Metric]:
    queue = Counter(queue_name(j) for j in jobs)
    for name in QUEUE_NAMES:
        yield _gauge(f"slurm_queue_{name}", f"Jobs in state {name}", queue.get(name, 0))

    reasons = Counter(j.reason for j in jobs if j.is_pending)
    fam = GaugeMetricFamily("slurm_pending_reason_total", "Pending jobs by reason code",
                            labels=["reason"])
    for reason, count in sorted(reasons.items()):
        fam.add_metric([reason], float(count))
    yield fam

    by_spu = Counter((j.state.lower(), j.partition, j.user) for j in jobs)
    fam = GaugeMetricFamily("slurm_jobs", "Jobs by state, partition and user",
                            labels=["state", "partition", "user"])
    for (state, part, user), count in sorted(by_spu.items()):
        fam.add_metric([state, part, user], float(count))
    yield fam

    users = sorted({j.user for j in jobs})
    for key, doc, pick in (
        ("jobs_pending", "Pending jobs of the user", lambda j: j.is_pending),
        ("jobs_running", "Running jobs of the user", lambda j: j.is_running),
        ("jobs_suspended", "Suspended jobs of the user", lambda j: j.state == "SUSPENDED"),
    ):
        fam = GaugeMetricFamily(f"slurm_user_{key}", doc, labels=["user"])
        counts = Counter(j.user for j in jobs if pick(j))
        for user in users:
            fam.add_metric([user], float(counts.get(user, 0)))
        yield fam
    fam = GaugeMetricFamily("slurm_user_cpus_running", "CPUs of the user's running jobs",
                            labels=["user"])
    gpus = GaugeMetricFamily("slurm_user_gpus_running", "GPUs of the user's running jobs",
                             labels=["user"])
    for user in users:
        mine = [j for j in jobs if j.user == user and j.is_running]
        fam.add_metric([user], float(sum(j.num_cpus for j in mine)))
        gpus.add_metric([user], float(sum(j.gpus_allocated for j in mine)))
    yield fam
    yield gpus


def partition_job_metrics(jobs: tuple[SlurmJob, ...]) -> Iterator[Metric]:
    pending = GaugeMetricFamily("slurm_partition_jobs_pending", "Pending jobs in the partition",
                                labels=["partition"])
    running = GaugeMetricFamily("slurm_partition_jobs_running", "Running jobs in the partition",
                                labels=["partition"])
    parts = sorted({p for j in jobs for p in j.partition.split(",") if p})
    pend = Counter(p for j in jobs if j.is_pending for p in j.partition.split(","))
    run = Counter(j.partition for j in jobs if j.is_running)
    for part in parts:
        pending.add_metric([part], float(pend.get(part, 0)))
        running.add_metric([part], float(run.get(part, 0)))
    yield pending
    yield running
