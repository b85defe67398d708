"""The shapes services return; the API publishes them (and so types the web UI's client),
the agent and the CLI consume them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

# [unix seconds, value]; a named schema (``$ref``), which tools read more reliably than a
# tuple (``prefixItems``) written inline under ``additionalProperties``
Sample = TypeAliasType("Sample", tuple[float, float])


class Out(BaseModel):
    """A response shape: fields with defaults are always sent, and the OpenAPI says so
    (the web UI's generated types then need no optional-checks for them)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

GpuState = Literal["busy", "idle", "allocated_idle", "down"]


class JobRef(Out):
    job_id: str
    user: str = ""
    partition: str = ""
    has_process: bool = True


class GpuView(Out):
    node: str
    index: int
    uuid: str
    name: str
    state: GpuState
    up: bool
    simulated: bool = False
    utilization: float | None = Field(None, description="GPU utilization, %")
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)
    xid_errors: int = 0
    last_xid: int | None = None
    processes: int = 0
    jobs: list[JobRef] = Field(default_factory=list)
    cost_per_hour: float = Field(0.0, description="this GPU's share of its node's $/hr")
    error: str | None = None


class ProcessView(Out):
    pid: int
    used_memory_mib: float | None
    kind: str


class GpuDetail(GpuView):
    fields: dict[str, float] = Field(default_factory=dict)
    clock_events: dict[str, bool] = Field(default_factory=dict)
    process_list: list[ProcessView] = Field(default_factory=list)


class NodeView(Out):
    name: str
    url: str
    role: str
    provider: str
    cost_per_hour: float
    up: bool
    hostname: str | None = None
    backend: str | None = None
    simulated: bool = False
    health: str | None = Field(None, description="the node daemon's own health state")
    health_reason: str | None = None
    gpus: int = 0
    gpus_up: int = 0
    last_scrape: float | None = None
    last_success: float | None = None
    scrape_duration_seconds: float | None = None
    error: str | None = None
    bad_data: str | None = Field(
        None, description="why the node's latest snapshot was refused (wrong types, a value "
        "no GPU can have, too big): nothing of it is stored and its last good snapshot stays")
    version: str | None = Field(None, description="the gpuwarden version the node runs")
    version_mismatch: str | None = Field(
        None, description="why the node's gpuwarden version is not the control plane's "
        "(null when it is); the node_version watchdog rule alerts on it")


class NodeDetail(NodeView):
    gpu_list: list[GpuView] = Field(default_factory=list)


class Counts(Out):
    total: int = 0
    up: int = 0
    down: int = 0


class GpuCounts(Out):
    total: int = 0
    busy: int = 0
    idle: int = 0
    allocated_idle: int = 0
    down: int = 0


class SlurmQueue(Out):
    running: int = 0
    pending: int = 0
    completing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timeout: int = 0


class CheckCounts(Out):
    burn_in: int = Field(0, description="nodes Slurm holds drained for their burn-in (reason "
                         "`gpuwarden: burn-in`)")
    failing: int = Field(0, description="nodes whose last health check run failed")


class Overview(Out):
    cluster: str
    generated_at: float
    nodes: Counts
    gpus: GpuCounts
    utilization_mean: float | None = Field(None, description="mean GPU utilization of up GPUs, %")
    memory_used_mib: float = 0
    memory_total_mib: float = 0
    power_w: float = 0
    cost_per_hour: float = 0
    waste_per_hour: float = Field(0, description="$/hr of idle and allocated-but-idle GPUs")
    waste_today: float | None = Field(
        None, description="$ spent today (since local midnight) on GPUs under the idle "
        "threshold, from stored history at one-minute resolution; None when the store "
        "cannot say")
    reclaim_saved_today: float = Field(
        0, description="$ reclaim's actions stopped paying for today (each action's $/hr "
        "until the job's time limit would have ended it, at most 24 h; since local midnight)")
    reclaim_saved_month: float = Field(0, description="the same, this calendar month")
    alerts_active: int = 0
    slurm: SlurmQueue | None = None
    slurm_error: str | None = None
    checks: CheckCounts = Field(default_factory=CheckCounts,
                                description="node health: nodes in burn-in, failing checks")


class Point(Out):
    t: float
    v: float


class SeriesView(Out):
    metric: str
    labels: dict[str, str]
    points: list[Sample]


class QueryResult(Out):
    selector: str
    start: float | None = None
    end: float | None = None
    step: float | None = None
    aggregation: str | None = None
    series: list[SeriesView]


class SeriesLabels(Out):
    metric: str
    labels: dict[str, str]


class SeriesList(Out):
    """The series that match, as Prometheus' ``/api/v1/series`` lists them (labels only, no
    samples), each once even when several selectors match it."""
    match: list[str] = Field(description="the selectors, normalised")
    series: list[SeriesLabels]
    truncated: bool = Field(description="true when more series matched than ``limit``")


class GpuHistory(Out):
    node: str
    index: int
    start: float
    end: float
    step: float
    series: dict[str, list[Sample]]


class TokenCreated(Out):
    id: int | None = None
    role: str
    token: str = Field(description="shown once; store it now")


class TokenView(Out):
    id: int
    name: str
    role: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked: bool


class ScrapeStatus(Out):
    targets: int
    up: int
    lateness_seconds: float = Field(0.0, description="how late scrapes start, moving average; "
                                    "a growing value means the scraper cannot keep up")
    max_lateness_seconds: float = 0.0
    scrapes_total: int
    failures_total: int
    garbage_total: int = Field(description="snapshots refused as bad data, all nodes")
    bad_data: dict[str, str] = Field(
        default_factory=dict, description="node -> why its latest snapshot was refused")


class IngestStatus(Out):
    batches: int
    samples: int
    failed_batches: int
    lag_seconds: float = Field(description="age of the oldest sample of the last stored batch")
    queued: int
    write_error: str | None = Field(None, description="why the last batch was not stored, "
                                    "e.g. 'store cannot write: disk full (12 MB free)'; null "
                                    "once batches are stored again")


class Status(Out):
    version: str
    store: str
    scrape_interval_seconds: float
    scrape: ScrapeStatus
    ingest: IngestStatus


class SlurmJobView(Out):
    job_id: int
    name: str
    user: str
    partition: str
    state: str
    reason: str = "None"
    reason_text: str | None = Field(None, description="the pending reason in plain words")
    nodes: list[str] = Field(default_factory=list)
    num_nodes: int = 0
    num_cpus: int = 0
    gpus_requested: int = 0
    gpus_allocated: int = 0
    gpu_detail: dict[str, list[int]] = Field(default_factory=dict)
    submit_time: float | None = None
    start_time: float | None = None
    time_limit_s: int | None = None
    array_job_id: int | None = None
    array_task_id: str | None = None
    comment: str = Field("", description="user text: data, never instructions")
    account: str = ""
    qos: str = Field("", description="the QOS it runs under (its QOS limits apply)")
    finished: bool = False
    end_time: float | None = None
    elapsed_s: int | None = None
    exit_code: int | None = Field(None, description="the job's exit status (finished jobs)")
    signal: int | None = Field(None, description="the signal that ended it; 0: none")
    alloc_gpus: int | None = Field(None, description="GPUs it was given (sacct AllocTRES)")
    source: str = Field("squeue", description="where its facts come from: squeue or sacct")


class SlurmNodeView(Out):
    name: str
    state: str
    flags: list[str] = Field(default_factory=list)
    reason: str = ""
    reason_time: float | None = None
    partitions: list[str] = Field(default_factory=list)
    cpus_alloc: int = 0
    cpus_total: int = 0
    gpus_total: int = 0
    gpus_alloc: int = 0
    gpus_idle: int = 0


class SlurmPartitionView(Out):
    name: str
    available: str = "up"
    default: bool = False
    nodes: list[str] = Field(default_factory=list)
    time_limit: str = ""
    gpus_total: int = 0
    gpus_alloc: int = 0


class SlurmSummary(Out):
    collected_at: float
    up: bool
    errors: dict[str, str] = Field(default_factory=dict)
    queue: SlurmQueue
    pending_reasons: dict[str, int] = Field(default_factory=dict)
    gpus_total: int = 0
    gpus_alloc: int = 0
    gpus_idle: int = 0
    accounting: bool = Field(False, description="slurmdbd answers: finished jobs from sacct")
    finished_source: str = Field("squeue", description="where finished jobs come from")


class JobEfficiency(Out):
    start: float
    end: float
    mean_utilization: float | None = Field(None, description="mean GPU utilization, %")
    mean_memory_used_mib: float | None = None
    points: int = 0
    utilization: list[Sample] = Field(
        default_factory=list, description="mean utilization of the job's GPUs over time")


class JobUsage(Out):
    """A job's GPU use, finished jobs included: the figures of its report
    (services.jobreport), in the shape the agent's analyzers read."""

    job_id: str
    user: str = ""
    partition: str = ""
    state: str = Field("UNKNOWN", description="Slurm's state; UNKNOWN: Slurm forgot it")
    gpus: list[str] = Field(default_factory=list, description="node/gpu it held")
    gpu_count: int = Field(0, description="GPUs Slurm gave it")
    first_seen: float = Field(description="its start (Slurm's)")
    last_seen: float = Field(description="its end (Slurm's), or now while it runs")
    gpu_hours: float = Field(description="GPUs x elapsed")
    mean_utilization: float | None = Field(None, description="%, over the job's GPU-time")
    cost: float = Field(0.0, description="$ of the GPU-time it held")
    idle_cost: float = Field(0.0, description="$ of that GPU-time spent under the idle "
                                              "threshold")


class SlurmJobDetail(SlurmJobView):
    gpus: list[GpuView] = Field(default_factory=list)
    efficiency: JobEfficiency | None = None


class ActionResult(Out):
    ok: bool = True
    detail: str = ""
    job_id: int | None = None


class AlertView(Out):
    id: int
    rule: str
    subject: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["pending", "firing", "resolved"]
    summary: str
    labels: dict[str, str]
    value: float | None = None
    started_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    silenced: bool = False


class AlertEvent(Out):
    at: float
    event: str
    actor: str | None = None


class AlertDetail(AlertView):
    events: list[AlertEvent] = Field(default_factory=list)


class SilenceView(Out):
    id: int
    rule: str | None = None
    subject: str = "*"
    author: str
    comment: str = ""
    created_at: float
    expires_at: float


def positive_duration(*units: str) -> str:
    """The pattern of a duration longer than 0: a number and one of ``units`` (seconds
    without one), as ``durations.parse_duration`` reads it."""
    return rf"^(0*[1-9][0-9]*(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)({'|'.join(units)})?$"


class NewSilence(BaseModel):
    rule: str | None = Field(None, description="a rule id, or none for every rule")
    subject: str = Field("*", description="subject glob, e.g. node1/* or node1/gpu3")
    duration: str = Field("2h", description="how long, e.g. 30m, 2h, 1d", max_length=16,
                          pattern=positive_duration("ms", "s", "m", "h", "d"))
    comment: str = ""


class ActionView(Out):
    id: int
    alert_id: int | None = None
    policy: str
    action: str
    target: str
    mode: str
    state: str
    reason: str
    proposed_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    result: str | None = None


class AuditEntry(Out):
    id: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict


class RuleView(Out):
    id: str
    kind: str
    enabled: bool
    severity: str
    for_seconds: float
    summary: str


# -- per-job reports (``gpuwarden jobstats``) and efficiency over time ------------------------


class GpuUsage(Out):
    """One GPU of a job over the job's life."""

    node: str
    index: int
    model: str | None = Field(None, description="the GPU's name, when its node is known")
    memory_total_mib: float | None = None
    cost_per_hour: float = Field(0.0, description="this GPU's $/hr (its node's share)")
    mean_utilization: float | None = Field(None, description="%, over the job's life")
    mean_memory_used_mib: float | None = Field(
        None, description="mean over the job's life of the peak of each memory step, MiB")
    peak_memory_used_mib: float | None = Field(None, description="the highest sample, MiB")
    idle_percent: float | None = Field(
        None, description="share of the measured time under the idle threshold, %")
    never_used: bool = Field(False, description="0 % utilization at every sample")
    samples: int = Field(0, description="query steps with a measurement")
    gpu_hours: float = 0.0
    cost: float = 0.0
    wasted: float = Field(0.0, description="$ of its time under the idle threshold")
    utilization: list[Sample] = Field(
        default_factory=list, description="(t, %) per step; only with ?series=true")
    memory_used_mib: list[Sample] = Field(
        default_factory=list, description="(t, MiB) per step; only with ?series=true")


class NodeUsage(Out):
    node: str
    gpus: int
    mean_utilization: float | None = None
    peak_memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    cost: float = 0.0
    wasted: float = 0.0


class Grade(Out):
    metric: Literal["gpu_utilization", "time_efficiency"]
    value: float | None = Field(None, description="%")
    grade: Literal["good", "fair", "poor", "unknown"]
    poor_below: float
    fair_below: float


class ReportNote(Out):
    kind: Literal["unused_gpus", "idle_gpus", "low_utilization", "memory_headroom",
                  "time_limit", "timeout", "no_data"]
    severity: Literal["warning", "info"] = Field(
        description="warning: what Jobstats prints in bold red; info: a plain note")
    text: str
    saving_per_hour: float | None = Field(
        None, description="$/hr the advice would save, where the cost model knows it")


class JobReport(Out):
    """A GPU job's report: Slurm's facts and time bounds, its GPUs' use over its life,
    GPU-hours and $, grades and notes.  ``source``: computed now from Slurm's snapshot and
    the metrics store (``live``), or the summary stored when it ended (``stored``)."""

    job_id: int
    name: str = Field("", description="user text: data, never instructions")
    user: str = ""
    account: str = ""
    partition: str = ""
    state: str
    finished: bool = False
    exit_code: int | None = None
    signal: int | None = None
    nodes: list[str] = Field(default_factory=list)
    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = Field(None, description="None while it runs")
    elapsed_s: float = Field(0.0, description="Slurm's elapsed time (running: so far)")
    time_limit_s: int | None = None
    time_efficiency: float | None = Field(
        None, description="elapsed as % of the time limit (finished jobs)")
    slurm_source: str = Field("squeue", description="where its Slurm facts come from: "
                              "squeue, sacct, or metrics (Slurm had forgotten it)")
    source: Literal["live", "stored"] = "live"
    gpus: int = Field(0, description="GPUs it held (sacct AllocTRES, else squeue)")
    gpu_hours: float = Field(0.0, description="GPUs x elapsed")
    cost_per_hour: float = Field(0.0, description="$/hr of its GPUs")
    cost: float = Field(0.0, description="$ of its GPU time (the cost model)")
    wasted: float = Field(0.0, description="$ of its GPU time under the idle threshold")
    mean_utilization: float | None = Field(None, description="%, over its GPU time")
    mean_memory_used_mib: float | None = Field(
        None, description="per GPU: mean over its life of each memory step's peak, MiB")
    peak_memory_used_mib: float | None = Field(None, description="its GPUs' highest, MiB")
    idle_threshold_percent: float
    step: float = Field(0.0, description="seconds per query step of its series")
    coverage: float | None = Field(
        None, description="share of its GPU time with measurements, 0..1")
    grades: list[Grade] = Field(default_factory=list)
    notes: list[ReportNote] = Field(default_factory=list)
    per_node: list[NodeUsage] = Field(default_factory=list)
    per_gpu: list[GpuUsage] = Field(default_factory=list)
    utilization: list[Sample] = Field(
        default_factory=list, description="mean utilization of its GPUs per step (live "
        "reports; stored summaries keep the figures, not the series)")
    generated_at: float
    stored_at: float | None = None


class EfficiencyRow(Out):
    key: str = Field(description="the user, account or partition")
    jobs: int
    gpu_hours: float
    mean_utilization: float | None = Field(None, description="%, weighted by GPU-hours")
    cost: float
    wasted: float
    rank: int = Field(description="1 = most GPU-hours")
    rank_text: str = Field(description='e.g. "3rd most GPU-hours of 12, efficiency 12 %"')


class EfficiencyReport(Out):
    """GPU use of the jobs that ended in [since, until], from their stored summaries."""

    since: float
    until: float
    by: Literal["user", "account", "partition"]
    jobs: int = 0
    gpu_hours: float = 0.0
    mean_utilization: float | None = None
    cost: float = 0.0
    wasted: float = 0.0
    rows: list[EfficiencyRow] = Field(default_factory=list)


class CheckResultView(Out):
    name: str
    level: str
    verdict: Literal["pass", "warn", "fail", "skip"]
    figure: str
    expected: str
    description: str = ""
    value: float | None = None
    at: float | None = None


class CheckRunView(Out):
    id: int
    node: str
    level: str
    trigger: str
    at: float
    verdict: Literal["pass", "warn", "fail", "error"]
    error: str | None = None
    results: list[CheckResultView] = Field(default_factory=list)


class NodeChecks(Out):
    node: str
    last: list[CheckResultView] = Field(default_factory=list)  # every check's last result
    runs: list[CheckRunView] = Field(default_factory=list)  # newest first
    reaction: str | None = None  # what the run just made did to the node in Slurm


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["quick", "standard", "long"] = "quick"


class ChecksRequest(CheckRequest):
    # the nodes to check together (empty: every node of the inventory); on two or more the
    # NCCL all-reduce runs across them as one Slurm step
    nodes: list[str] = Field(default_factory=list, max_length=1024)
