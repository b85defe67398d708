"""The GPU data model every source produces and every consumer reads.

A source (``nvml``, ``sim``) turns one poll into a :class:`GpuPoll`; nothing above this
package knows which source made it.  Field values are keyed by their exported metric name
(dcgm-exporter's where DCGM has one) so exposition is a lookup, not a translation table.
A field a GPU does not support is *absent* from ``fields``: sentinel values never appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

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
