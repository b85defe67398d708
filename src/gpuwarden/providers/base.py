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

# Provider-neutral node states (RunPod's pod states plus MISSING for "not created yet").
RUNNING = "RUNNING"
GONE_STATES = frozenset({"TERMINATED", "MISSING"})


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
    status: str                  # PROVISIONING, STARTING, RUNNING, EXITED, ERROR, TERMINATED...
    url: str | None = None       # the node daemon's base URL
    token_file: Path | None = None
    cost_per_hour: float = 0.0
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
        """Create what is missing (never a duplicate), then wait until every node is
        RUNNING, bootstrapped and answering /healthz."""
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
