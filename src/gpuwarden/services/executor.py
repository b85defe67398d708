"""The watchdog's policy actions, carried out through the same services an operator uses."""

from __future__ import annotations

from gpuwarden.errors import GpuwardenError
from gpuwarden.services import slurm
from gpuwarden.services.context import ControlPlane


class ControlPlaneExecutor:
    def __init__(self, cp: ControlPlane, actor: str = "watchdog") -> None:
        self._cp = cp
        self._actor = actor

    async def drain_node(self, node: str, reason: str) -> str:
        result = await slurm.node_action(self._cp, self._cp.http(), self._actor, node, "drain",
                                         reason)
        return result.detail

    async def cancel_job(self, job_id: str, reason: str) -> str:
        result = await slurm.job_action(self._cp, self._cp.http(), self._actor, int(job_id),
                                        "cancel")
        return result.detail

    async def stop_pod(self, node: str, reason: str) -> str:
        provider = next((n.provider for n in self._cp.inventory.nodes() if n.name == node),
                        None)
        raise GpuwardenError(f"cannot stop node {node}: provider {provider or 'unknown'} "
                             "has no stop action (providers arrive with `gpuwarden up`)")
