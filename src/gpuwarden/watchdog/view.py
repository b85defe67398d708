"""What the watchdog evaluates: the inventory, each node's latest scrape and the Slurm
controller's snapshot, in one immutable view per cycle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuwarden.gpu.model import LiveGpu, live_gpus
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.slurm.model import SlurmSnapshot
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


@dataclass(frozen=True, slots=True)
class ClusterView:
    now: float
    cluster: str
    nodes: Sequence[NodeFacts]
    gpus: Sequence[LiveGpu]  # the snapshots' GPUs as gpu.model.live_gpus sees them
    slurm: SlurmSnapshot | None = None  # the controller node's Slurm snapshot
    extra: Mapping[str, Any] = field(default_factory=dict)
    checks_passed: Mapping[str, float] = field(default_factory=dict)  # node -> last pass


def build_view(now: float, cluster: str, inventory: Sequence[Node],
               states: Mapping[str, TargetState]) -> ClusterView:
    nodes: list[NodeFacts] = []
    gpus: list[LiveGpu] = []
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
        gpus += live_gpus(inv.name, state.snapshot, state.up, state.error, inv.cost_per_hour)
    return ClusterView(now, cluster, nodes, gpus, slurm)
