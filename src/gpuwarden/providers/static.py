"""``provider: static``: machines the user already has.  ``up`` registers them (after
checking each answers /healthz), ``down`` unregisters them; nothing is created or
destroyed, and nothing is stopped: ``stop``/``start``/``terminate`` refuse, and a cluster
file with ``autostop`` is refused when it is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from gpuwarden.providers.base import (
    RUNNING,
    Clock,
    DownReport,
    NodeRecord,
    Progress,
    ProviderError,
    SystemClock,
)
from gpuwarden.providers.health import healthy
from gpuwarden.providers.spec import ClusterDescription, cannot_stop


@dataclass
class StaticProvider:
    http: httpx.Client
    clock: Clock = field(default_factory=SystemClock)
    start_timeout_s: float = 30.0
    kind: str = "static"

    def quote(self, spec: ClusterDescription) -> float:
        return sum(m.cost_per_hour for m in spec.machines)

    def provision(self, spec: ClusterDescription, progress: Progress) -> list[NodeRecord]:
        progress(f"checking {len(spec.machines)} machine(s)")
        deadline = self.clock.monotonic() + self.start_timeout_s
        while True:
            records = self.observe(spec)
            if all(r.healthy for r in records):
                return records
            if self.clock.monotonic() > deadline:
                down = ", ".join(f"{r.name} ({r.url})" for r in records if not r.healthy)
                raise ProviderError(f"machines: {down} did not answer /healthz; start "
                                    "`gpuwarden node` there or fix address:")
            self.clock.sleep(1.0)

    def observe(self, spec: ClusterDescription) -> list[NodeRecord]:
        controller = next((m.name for m in spec.machines if m.role == "controller"), None)
        records = []
        for i, m in enumerate(spec.machines, start=1):
            ok = healthy(self.http, m.address)
            role = "controller" if m.name == controller else "worker"
            records.append(NodeRecord(
                name=m.name, index=i, role=role, status=RUNNING if ok else "UNREACHABLE",
                url=m.address, token_file=m.token_file, cost_per_hour=m.cost_per_hour,
                healthy=ok))
        return records

    def cost_so_far(self, spec: ClusterDescription, nodes: list[NodeRecord]) -> float | None:
        return None

    def teardown(self, spec: ClusterDescription, progress: Progress) -> DownReport:
        progress("static machines are left running; only unregistering them")
        return DownReport(spec.name, ())

    def stop(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        raise self._cannot(spec, node_name)

    def start(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        raise self._cannot(spec, node_name)

    def terminate(self, spec: ClusterDescription, node_name: str,
                  progress: Progress) -> NodeRecord:
        raise self._cannot(spec, node_name)

    @staticmethod
    def _cannot(spec: ClusterDescription, node_name: str) -> ProviderError:
        return ProviderError(f"node {node_name}: {cannot_stop(spec)}")
