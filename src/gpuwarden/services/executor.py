"""The watchdog's policy actions, carried out through the same services an operator uses."""

from __future__ import annotations

from typing import Any

from gpuwarden.errors import ConflictError, GpuwardenError
from gpuwarden.services import slurm
from gpuwarden.services.context import ControlPlane


class ControlPlaneExecutor:
    def __init__(self, cp: ControlPlane, actor: str = "watchdog",
                 runtime: Any = None) -> None:  # runtime: providers.Runtime (tests: fakes)
        self._cp = cp
        self._actor = actor
        self._runtime = runtime

    async def drain_node(self, node: str, reason: str) -> str:
        result = await slurm.node_action(self._cp, self._cp.http(), self._actor, node, "drain",
                                         reason)
        return result.detail

    async def cancel_job(self, job_id: str, reason: str) -> str:
        return await self._job(job_id, "cancel")

    async def requeue_job(self, job_id: str, reason: str) -> str:
        return await self._job(job_id, "requeue")

    async def hold_job(self, job_id: str, reason: str) -> str:
        """A running job cannot merely be held: it is requeued and held (``scontrol
        requeuehold``), so it gives its GPUs back and waits for ``release``."""
        return await self._job(job_id, "requeuehold")

    async def _job(self, job_id: str, action: str) -> str:
        result = await slurm.job_action(self._cp, self._cp.http(), self._actor, job_id, action)
        return result.detail

    async def stop_pod(self, node: str, reason: str) -> str:
        """Stop (or, as its cluster file's ``autostop.action`` says, terminate) a node
        ``gpuwarden up`` made.  Its Slurm node is drained first, so nothing new lands on it;
        a job that started meanwhile undoes the drain and refuses the stop."""
        import asyncio

        from gpuwarden.providers import lifecycle
        from gpuwarden.providers.base import STOP_REASON
        from gpuwarden.providers.registry import home_of, load_saved

        inv = next((n for n in self._cp.inventory.nodes() if n.name == node), None)
        if inv is None or inv.source != "provider":
            raise GpuwardenError(f"cannot stop node {node}: it is not a node `gpuwarden up` "
                                 "made (a machine of the config file is yours to stop)")
        spec = load_saved(home_of(self._cp.db), inv.cluster)
        drained = False
        if spec.slurm and any(n.role == "controller" for n in self._cp.inventory.nodes()
                              if n.cluster == inv.cluster and n.status != "STOPPED"):
            text = f"{STOP_REASON} {reason}".replace('"', "'")[:200]
            await slurm.node_action(self._cp, self._cp.http(), self._actor, node, "drain",
                                    text)
            drained = True
            busy = await slurm.jobs_on_node(self._cp, self._cp.http(), node)
            if busy:
                await slurm.node_action(self._cp, self._cp.http(), self._actor, node, "resume")
                raise ConflictError(f"node {node}: job(s) {', '.join(busy)} started on it; "
                                    "not stopped (the drain is undone)")
        action = spec.autostop.action if spec.autostop else "stop"
        record = await asyncio.to_thread(lifecycle.stop_node, inv.cluster, node, self._cp.db,
                                         runtime=self._runtime, action=action)
        return (f"node {node}: {'drained, ' if drained else ''}{action} done "
                f"({record.status}, ${record.cost_per_hour:.2f}/hr)")

    async def replace_node(self, node: str, reason: str) -> str:
        """Replace the machine of a node ``gpuwarden up`` made (``checks.replace``): re-checked
        first (its last check run still failed), then :func:`lifecycle.replace_node`, which
        drains it, refuses when a Slurm job runs on it, terminates the machine, creates one
        under the same name and runs its burn-in."""
        import asyncio

        from gpuwarden.checks.store import CheckStore
        from gpuwarden.providers import lifecycle

        inv = next((n for n in self._cp.inventory.nodes() if n.name == node), None)
        if inv is None or inv.source != "provider":
            raise GpuwardenError(f"cannot replace node {node}: it is not a node `gpuwarden up` "
                                 "made")
        last = CheckStore(self._cp.db, self._cp.clock).last_runs().get(node)
        if last is None or last.verdict != "fail":
            raise ConflictError(f"node {node}: its last check run "
                                f"{'is gone' if last is None else 'passed'}; not replaced")
        report = await asyncio.to_thread(lifecycle.replace_node, inv.cluster, node,
                                         self._cp.db, runtime=self._runtime,
                                         actor=self._actor)
        problems = f"; burn-in: {'; '.join(report.problems)}" if report.problems else ""
        return f"node {node}: replaced ({reason}){problems}"
