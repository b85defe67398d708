"""What the watchdog evaluates: the inventory, each node's latest scrape and the Slurm
controller's snapshot, in one immutable view per cycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuwarden.metrics.scraper import TargetState
from gpuwarden.state.inventory import Node


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str
    up: bool
    error: str | None
    last_success: float
    cost_per_hour: float
    provider: str
    role: str
    version_mismatch: str | None = None  # the node's gpuwarden is not the control plane's


@dataclass(slots=True)  # read-only by convention: a frozen one is ~3x slower to build, x8,000
class GpuFacts:
    node: str
    index: int
    uuid: str
    name: str
    up: bool
    error: str | None
    fields: Mapping[str, float]
    clock_events: Mapping[str, bool]
    xids: Sequence[Mapping[str, Any]]
    jobs: Sequence[Mapping[str, Any]]
    processes: int
    cost_per_hour: float

    @property
    def subject(self) -> str:
        return f"{self.node}/gpu{self.index}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    now: float
    cluster: str
    nodes: Sequence[NodeFacts]
    gpus: Sequence[GpuFacts]
    slurm: Mapping[str, Any] | None = None  # the controller node's /api/v1/slurm document
    extra: Mapping[str, Any] = field(default_factory=dict)
    checks_passed: Mapping[str, float] = field(default_factory=dict)  # node -> last pass


def build_view(now: float, cluster: str, inventory: Sequence[Node],
               states: Mapping[str, TargetState]) -> ClusterView:
    nodes: list[NodeFacts] = []
    gpus: list[GpuFacts] = []
    slurm = None
    for inv in inventory:
        state = states.get(inv.name)
        if state is None or state.last_scrape == 0:
            continue  # not scraped yet: nothing is known, nothing to say
        nodes.append(NodeFacts(inv.name, state.up, state.error, state.last_success,
                               inv.cost_per_hour, inv.provider, inv.role,
                               state.version_mismatch))
        if inv.role == "controller" and state.slurm is not None:
            slurm = state.slurm
        snapshot_gpus = (state.snapshot or {}).get("gpus", [])
        per_gpu = inv.cost_per_hour / len(snapshot_gpus) if snapshot_gpus else 0.0
        for g in snapshot_gpus:
            up = bool(g.get("up")) and state.up
            gpus.append(GpuFacts(
                node=inv.name, index=int(g["index"]), uuid=g["uuid"], name=g["name"], up=up,
                error=g.get("error") or (None if state.up else state.error),
                fields=g.get("fields") or {}, clock_events=g.get("clock_events") or {},
                xids=g.get("xids") or [], jobs=g.get("jobs") or [],
                processes=len(g.get("processes") or []), cost_per_hour=per_gpu,
            ))
    return ClusterView(now, cluster, nodes, gpus, slurm)
