"""What every provider implements, and the small collaborators they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from gpuwarden.providers.spec import ClusterDescription

Progress = Callable[[str], None]
Role = Literal["controller", "worker"]

# Provider-neutral node states (RunPod's pod states plus MISSING for "not created yet" and
# STOPPED for "stopped on purpose": restartable with ``start``, no GPU billed meanwhile;
# RunPod's EXITED, where its ``stop`` action moves a pod, is reported as STOPPED).
RUNNING = "RUNNING"
STOPPED = "STOPPED"
GONE_STATES = frozenset({"TERMINATED", "MISSING"})

# The reason a node is drained with before its machine stops.  ``start`` resumes a Slurm
# node drained with a reason starting with it (or one Slurm marked DOWN as not responding
# while it was stopped); a node drained for anything else (a failed health check) stays
# drained.  Whoever drains a node ahead of a stop (the reclaim engine) uses this prefix.
STOP_REASON = "[gpuwarden-stop]"


def no_progress(_: str) -> None:
    """A :data:`Progress` that says nothing."""


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class NodeRecord:
    """One node of a cluster as its provider sees it."""

    name: str                    # inventory name, unique across clusters: "<cluster>-node<i>"
    index: int                   # 1-based; node 1 is the Slurm controller
    role: Role
    status: str                  # PROVISIONING, STARTING, RUNNING, STOPPED, ERROR, TERMINATED...
    url: str | None = None       # the node daemon's base URL
    token_file: Path | None = None
    cost_per_hour: float = 0.0   # compute (GPU) $/hr now: 0 while STOPPED (storage excluded)
    gpus: int | None = None      # GPUs the provider reports (None: unknown)
    provider_id: str | None = None
    healthy: bool | None = None  # the node daemon answered /healthz
    detail: str = ""


@dataclass(frozen=True)
class ClusterReport:
    """What ``up`` and ``status`` return."""

    name: str
    provider: str
    nodes: tuple[NodeRecord, ...]
    cost_per_hour: float
    cost_so_far: float | None = None
    problems: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return bool(self.nodes) and all(n.status == RUNNING and n.healthy for n in self.nodes)


@dataclass(frozen=True)
class DownReport:
    name: str
    terminated: tuple[str, ...]
    orphans: tuple[str, ...] = ()   # found by tag, not in our records
    unregistered: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workspace:
    """Where a cluster's local files live: ``$GPUWARDEN_HOME/clusters/<name>/``."""

    home: Path
    name: str

    @property
    def directory(self) -> Path:
        return self.home / "clusters" / self.name

    @property
    def description_file(self) -> Path:
        return self.directory / "cluster.json"

    def token_file(self, node: str) -> Path:
        return self.directory / "tokens" / f"{node}.token"


@dataclass
class ProviderError(Exception):
    """A provider failed in a way the user should read (one line)."""

    message: str
    alternatives: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


class Provider(Protocol):
    """A place nodes come from.  Every method is idempotent and safe to retry."""

    kind: str

    def quote(self, spec: ClusterDescription) -> float:
        """Expected $/hr of the whole cluster; raise :class:`ProviderError` (no capacity,
        unknown GPU type...) before anything is created."""
        ...

    def provision(self, spec: ClusterDescription, progress: Progress) -> list[NodeRecord]:
        """Create what is missing (never a duplicate), start what is stopped, then wait
        until every node is RUNNING, bootstrapped and answering /healthz."""
        ...

    def observe(self, spec: ClusterDescription) -> list[NodeRecord]:
        """The nodes as the provider lists them now (found by tag)."""
        ...

    def cost_so_far(self, spec: ClusterDescription, nodes: list[NodeRecord]) -> float | None:
        """Money spent on this cluster, when the provider can tell."""
        ...

    def teardown(self, spec: ClusterDescription, progress: Progress) -> DownReport:
        """Terminate every node of the cluster, reconciling against the provider's own list
        until nothing tagged with the cluster is left."""
        ...

    # One node at a time (the reclaim engine's autostop, an operator's "stop this node").
    # Call them through :func:`gpuwarden.providers.lifecycle.stop_node` / ``start_node``,
    # which also keep the Slurm controller (node 1) the last node stopped and the first
    # started, and record the result in the inventory.  A provider that cannot do it
    # (``static``) raises :class:`ProviderError` saying so; :func:`~gpuwarden.providers.
    # spec.cannot_stop` tells beforehand.

    def stop(self, spec: ClusterDescription, node_name: str,
             progress: Progress) -> NodeRecord:
        """Stop the node's machine so its GPUs are no longer billed, keeping its disk, and
        return it STOPPED with ``cost_per_hour`` 0.  Storage a stopped node keeps may still
        be billed (RunPod bills a stopped pod's disk); only :meth:`terminate` or ``down``
        ends that.  Already stopped: returns it unchanged."""
        ...

    def start(self, spec: ClusterDescription, node_name: str,
              progress: Progress) -> NodeRecord:
        """Start a stopped node again and wait until it is RUNNING and answering /healthz
        (and, with Slurm, back in service).  Already running: waits for health only."""
        ...

    def terminate(self, spec: ClusterDescription, node_name: str,
                  progress: Progress) -> NodeRecord:
        """Remove the node for good (``down`` for one node: nothing of it is left billing,
        disk included) and return it TERMINATED or MISSING; ``up`` creates it anew."""
        ...


def node_index(spec: ClusterDescription, node_name: str) -> int:
    """The 1-based index of ``node_name`` in ``spec``; ProviderError naming the nodes."""
    names = spec.node_names
    if node_name not in names:
        raise ProviderError(f"node {node_name!r} is not a node of cluster {spec.name} "
                            f"(its nodes: {', '.join(names)})")
    return names.index(node_name) + 1
