"""The GPU data model every source produces and every consumer reads.

A source (``nvml``, ``sim``) turns one poll into a :class:`GpuPoll`; nothing above this
package knows which source made it.  Field values are keyed by their exported metric name
(dcgm-exporter's where DCGM has one) so exposition is a lookup, not a translation table.
A field a GPU does not support is *absent* from ``fields``: sentinel values never appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

# XIDs that are usually caused by the application, not by a broken GPU
# (NVIDIA's XID catalogue: 13 graphics engine exception, 31 MMU fault, 43 channel
# stopped, 45 preemptive cleanup, 68 video processor exception).
APPLICATION_XIDS: frozenset[int] = frozenset({13, 31, 43, 45, 68})


def is_application_xid(xid: int) -> bool:
    return xid in APPLICATION_XIDS


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """What does not change while the driver stays loaded."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    minor_number: int
    driver_version: str
    simulated: bool = False

    @property
    def device(self) -> str:
        """The device name dcgm-exporter puts in its ``device`` label."""
        return f"nvidia{self.minor_number}"


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    used_memory_mib: float | None  # None where the driver cannot tell (WDDM, some containers)
    kind: str = "compute"  # compute | graphics


@dataclass(frozen=True, slots=True)
class XidCount:
    xid: int
    count: int
    last_seen: float  # unix time of the latest occurrence

    @property
    def application(self) -> bool:
        return is_application_xid(self.xid)

    @property
    def kind(self) -> str:
        """``application`` or ``hardware``: the XID class the snapshot and the rules name."""
        return "application" if is_application_xid(self.xid) else "hardware"


@dataclass(frozen=True, slots=True)
class HealthReadings:
    """What the node health checks read beside the metric fields (never exported as
    series): the PCIe link now and at its maximum, the default power limit, and whether a
    row remap waits for a GPU reset.  None where the GPU cannot tell."""

    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    power_limit_default_w: float | None = None
    row_remap_pending: bool | None = None


@dataclass(frozen=True, slots=True)
class GpuSample:
    identity: GpuIdentity
    up: bool
    fields: Mapping[str, float] = field(default_factory=dict)
    clock_events: Mapping[str, bool] = field(default_factory=dict)
    processes: tuple[GpuProcess, ...] = ()
    xids: tuple[XidCount, ...] = ()
    last_xid: int | None = None  # value of the latest XID, None when XIDs cannot be watched
    error: str | None = None  # why ``up`` is False
    readings: HealthReadings | None = None  # for the node health checks

    @property
    def index(self) -> int:
        return self.identity.index


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """Whether the source itself works; a lost GPU is per-GPU, not source health."""

    state: str  # "ok" | "degraded" | "down"
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True, slots=True)
class GpuPoll:
    """One poll of every GPU on the machine."""

    timestamp: float
    backend: str  # "nvml" | "sim"
    gpus: tuple[GpuSample, ...]
    health: SourceHealth
    driver_version: str = ""
    # NVML return-code name -> how many calls failed with it during this poll
    errors: Mapping[str, int] = field(default_factory=dict)
    cuda_driver_version: str = ""  # the CUDA version the driver supports ("12.4")


class GpuSource(Protocol):
    """A GPU backend.  ``poll`` is called from one thread only; it must not raise for a
    problem with one GPU or with the driver: such problems are reported in the poll."""

    backend: str

    def start(self) -> None: ...

    def poll(self) -> GpuPoll: ...

    def close(self) -> None: ...


class NoGpuFound(RuntimeError):
    """``auto`` found no NVIDIA GPU (or no driver); the message says how to ask for sim."""


# -- a node's snapshot as the control plane holds it (decoded by gpu.wire) ---------------------

UTILIZATION = "DCGM_FI_DEV_GPU_UTIL"
NO_FIELDS: Mapping[str, float] = MappingProxyType({})
NO_EVENTS: Mapping[str, bool] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class GpuJob:
    """The Slurm job a node says holds one of its GPUs."""

    job_id: str
    user: str = ""
    partition: str = ""
    has_process: bool = True  # a process of the job runs on the GPU (else: Slurm's word)


class NodeGpu(NamedTuple):
    """One GPU of a node's snapshot, decoded and checked (``gpu.wire``).  A NamedTuple, not
    a frozen dataclass: 8,000 are built per second at 1,000 nodes, and a frozen dataclass
    of this size costs ~5x as much to build."""

    index: int
    uuid: str
    name: str
    pci_bus_id: str
    device: str
    simulated: bool
    up: bool  # as the node reports it (LiveGpu.up adds whether the node answers)
    error: str | None
    fields: Mapping[str, float]  # read-only
    clock_events: Mapping[str, bool]  # read-only
    processes: tuple[GpuProcess, ...]
    xids: tuple[XidCount, ...]
    last_xid: int | None
    jobs: tuple[GpuJob, ...]

    @property
    def utilization(self) -> float | None:
        return self.fields.get(UTILIZATION)

    @property
    def memory_total_mib(self) -> float | None:
        """FB total, or used + free + reserved where the GPU reports no total."""
        fields = self.fields
        total = fields.get("DCGM_FI_DEV_FB_TOTAL")
        if total is None:
            used, free = fields.get("DCGM_FI_DEV_FB_USED"), fields.get("DCGM_FI_DEV_FB_FREE")
            if used is not None and free is not None:
                total = used + free + fields.get("DCGM_FI_DEV_FB_RESERVED", 0.0)
        return total


@dataclass(frozen=True, slots=True)
class NodeInfo:
    hostname: str
    hostname_label: str
    backend: str = ""
    driver_version: str = ""
    version: str = ""  # the node's gpuwarden version
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class DecodedSnapshot:
    """A node's ``/api/v1/snapshot`` as the control plane holds it: decoded and checked
    once by :func:`gpuwarden.gpu.wire.decode_snapshot`, never changed."""

    node: NodeInfo
    timestamp: float
    gpus: tuple[NodeGpu, ...] = ()
    age_seconds: float = 0.0
    health: str | None = None  # the node's source health: ok | degraded | down
    health_reason: str | None = None
    collector: Mapping[str, Any] | None = None  # the collector's self-metrics

    @property
    def simulated(self) -> bool:
        return any(g.simulated for g in self.gpus)


# The GPU states (services.models.GpuState): the rules are gpu_state's, and only its.
GPU_STATES = ("busy", "idle", "allocated_idle", "down")
WASTED_STATES = ("idle", "allocated_idle")


def gpu_state(up: bool, utilization: float | None, allocated: bool, idle_below: float) -> str:
    """``down``: the GPU or its node does not answer; ``busy``: utilization at or above
    ``idle_below``; ``allocated_idle``: below it while a job holds the GPU (the most wasted
    GPU); ``idle``: below it and no job."""
    if not up:
        return "down"
    if utilization is not None and utilization >= idle_below:
        return "busy"
    return "allocated_idle" if allocated else "idle"


class LiveGpu(NamedTuple):
    """A GPU of a node's last good snapshot as the control plane sees it now: whether it
    and its node answer, why not, and its share of the node's $/hr (:func:`live_gpus`)."""

    node: str
    gpu: NodeGpu
    up: bool
    error: str | None
    cost_per_hour: float

    @property
    def index(self) -> int:
        return self.gpu.index

    @property
    def uuid(self) -> str:
        return self.gpu.uuid

    @property
    def name(self) -> str:
        return self.gpu.name

    @property
    def fields(self) -> Mapping[str, float]:
        return self.gpu.fields

    @property
    def clock_events(self) -> Mapping[str, bool]:
        return self.gpu.clock_events

    @property
    def xids(self) -> tuple[XidCount, ...]:
        return self.gpu.xids

    @property
    def jobs(self) -> tuple[GpuJob, ...]:
        return self.gpu.jobs

    @property
    def processes(self) -> tuple[GpuProcess, ...]:
        return self.gpu.processes

    @property
    def utilization(self) -> float | None:
        return self.gpu.fields.get(UTILIZATION)

    @property
    def subject(self) -> str:
        return f"{self.node}/gpu{self.gpu.index}"

    def state(self, idle_below: float) -> str:
        return gpu_state(self.up, self.gpu.fields.get(UTILIZATION), bool(self.gpu.jobs),
                         idle_below)


def live_gpus(node: str, snapshot: DecodedSnapshot | None, node_up: bool,
              node_error: str | None, cost_per_hour: float) -> tuple[LiveGpu, ...]:
    """The GPUs of ``node``'s last good snapshot: a GPU is up when it says so and its node
    answers; its error is its own, else the node's while the node does not answer; its
    $/hr is the node's shared by its GPUs.  The one place these are worked out."""
    if snapshot is None or not snapshot.gpus:
        return ()
    gpus = snapshot.gpus
    per_gpu = cost_per_hour / len(gpus)
    node_err = None if node_up else node_error
    make = _new_tuple  # LiveGpu(...) less its Python-level __new__: 8,000 per rebuild
    return tuple([make(LiveGpu, (node, g, g.up and node_up, g.error or node_err, per_gpu))
                  for g in gpus])


_new_tuple = tuple.__new__
