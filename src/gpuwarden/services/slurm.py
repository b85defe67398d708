"""Slurm through the control plane: reads come from the controller node's latest scraped
Slurm snapshot (decoded once, by the scraper: :class:`~gpuwarden.slurm.model.SlurmSnapshot`);
actions go to the controller's node daemon, under the caller's identity, and are written to
the audit log."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.metrics.ingest import JOB_INFO
from gpuwarden.metrics.model import parse_selector
from gpuwarden.nodeclient import NodeClient, NodeError
from gpuwarden.services import jobreport
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.history import resolve_window
from gpuwarden.services.live import NotFound, list_gpus, queue_view
from gpuwarden.services.models import (
    ActionResult,
    JobEfficiency,
    JobUsage,
    SlurmJobDetail,
    SlurmJobView,
    SlurmNodeView,
    SlurmPartitionView,
    SlurmSummary,
)
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmSnapshot, jobs_on
from gpuwarden.state.audit import AuditLog

V = TypeVar("V", bound=SlurmJobView)


class SlurmUnavailable(GpuwardenError):
    """The controller is configured but its Slurm data is not there (yet)."""


class SlurmNotConfigured(NotFoundError):
    """No node has role: controller."""


def _snapshot(cp: ControlPlane) -> SlurmSnapshot:
    """The controller's latest Slurm snapshot (the scraper decoded it), or why there is
    none."""
    for node in cp.inventory.nodes():
        if node.role != "controller":
            continue
        state = cp.scraper.states.get(node.name) if cp.scraper else None
        if state is None or state.slurm is None:
            why = (state.slurm_error or state.error) if state else "not scraped yet"
            raise SlurmUnavailable(f"no Slurm data from controller node {node.name!r}: {why}")
        return state.slurm
    raise SlurmNotConfigured("Slurm is not configured: no node has role: controller; mark the "
                             "Slurm controller's node with role: controller")


def job_view(job: SlurmJob, view: type[V] = SlurmJobView) -> V:  # type: ignore[assignment]
    """The API's view of one job (``view``: :class:`SlurmJobView` or a subclass)."""
    return view(
        job_id=job.job_id, name=job.name, user=job.user, partition=job.partition,
        state=job.state, reason=job.reason, reason_text=job.reason_text,
        nodes=list(job.nodes), num_nodes=job.num_nodes, num_cpus=job.num_cpus,
        gpus_requested=job.gpus_requested, gpus_allocated=job.gpus_allocated,
        gpu_detail={node: list(ix) for node, ix in job.gpu_detail.items()},
        submit_time=job.submit_time, start_time=job.start_time,
        time_limit_s=job.time_limit_s, array_job_id=job.array_job_id,
        array_task_id=job.array_task_id, comment=job.comment, account=job.account,
        qos=job.qos, finished=job.is_finished, end_time=job.end_time,
        elapsed_s=job.elapsed_s, exit_code=job.exit_code, signal=job.signal,
        alloc_gpus=job.alloc_gpus, source=job.source)


def node_view(node: SlurmNode) -> SlurmNodeView:
    return SlurmNodeView(
        name=node.name, state=node.state, flags=list(node.flags), reason=node.reason,
        reason_time=node.reason_time, partitions=list(node.partitions),
        cpus_alloc=node.cpus_alloc, cpus_total=node.cpus_total, gpus_total=node.gpus_total,
        gpus_alloc=node.gpus_alloc, gpus_idle=node.gpus_idle)


def summary(cp: ControlPlane) -> SlurmSummary:
    snap = _snapshot(cp)
    return SlurmSummary(
        collected_at=snap.collected_at, up=snap.up, errors=dict(snap.errors),
        queue=queue_view(snap), pending_reasons=dict(snap.pending_reasons),
        gpus_total=snap.gpus_total, gpus_alloc=snap.gpus_alloc, gpus_idle=snap.gpus_idle,
        accounting=snap.accounting, finished_source=snap.finished_source)


def jobs(cp: ControlPlane, *, state: str | None = None, user: str | None = None,
         partition: str | None = None) -> list[SlurmJobView]:
    wanted = state.upper() if state is not None else None
    return [job_view(j) for j in _snapshot(cp).jobs
            if (wanted is None or j.state == wanted)
            and (user is None or j.user == user)
            and (partition is None or j.partition == partition)]


def nodes(cp: ControlPlane) -> list[SlurmNodeView]:
    return [node_view(n) for n in _snapshot(cp).nodes]


def partitions(cp: ControlPlane) -> list[SlurmPartitionView]:
    snap = _snapshot(cp)
    by_node = {n.name: n for n in snap.nodes}
    out = []
    for p in snap.partitions:
        members = [by_node[n] for n in p.nodes if n in by_node]
        out.append(SlurmPartitionView(name=p.name, available=p.available, default=p.default,
                                      nodes=list(p.nodes), time_limit=p.time_limit,
                                      gpus_total=sum(n.gpus_total for n in members),
                                      gpus_alloc=sum(n.gpus_alloc for n in members)))
    return out


def find_job(cp: ControlPlane, job_id: int) -> SlurmJobView | None:
    """One job of the Slurm snapshot (any state), or None when Slurm does not list it."""
    found = _snapshot(cp).job(job_id)
    return job_view(found) if found is not None else None


def missing_job_text(cp: ControlPlane, job_id: int) -> str:
    """Why Slurm does not list ``job_id``, true to where its finished jobs come from."""
    return _snapshot(cp).missing_job_text(job_id)


def ended_jobs(cp: ControlPlane, *, since: float) -> list[SlurmJobView]:
    """The finished jobs of the snapshot that ended at or after ``since`` (the others are
    not turned into views)."""
    return [job_view(j) for j in _snapshot(cp).jobs
            if j.is_finished and (j.end_time or 0) >= since]


async def job(cp: ControlPlane, job_id: int) -> SlurmJobDetail:
    snap = _snapshot(cp)
    found = snap.job(job_id)
    if found is None:
        raise NotFound(snap.missing_job_text(job_id))
    detail = job_view(found, SlurmJobDetail)
    held = {(node, i) for node, indices in detail.gpu_detail.items() for i in indices}
    detail.gpus = [g for name in sorted({n for n, _ in held}) for g in list_gpus(cp, node=name)
                   if (g.node, g.index) in held]
    if detail.start_time and (held or jobreport.is_gpu_job(detail)):
        detail.efficiency = await _efficiency(cp, detail)
    return detail


async def _efficiency(cp: ControlPlane, job: SlurmJobView) -> JobEfficiency:
    """The job page's utilization curve and means: its report's (Slurm's time bounds)."""
    report = await jobreport.build_report(cp, job)
    return JobEfficiency(
        start=report.start_time or 0.0, end=report.end_time or report.generated_at,
        points=sum(g.samples for g in report.per_gpu), utilization=report.utilization,
        mean_utilization=report.mean_utilization,
        mean_memory_used_mib=report.mean_memory_used_mib)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


async def job_history(cp: ControlPlane, *, job_id: int | None = None, user: str | None = None,
                      start: float, end: float) -> list[JobUsage]:
    """Jobs' GPU use between ``start`` and ``end``: each job that held a GPU then (as
    ``gpuwarden_gpu_job_info`` shows), that Slurm lists, or whose summary is stored,
    measured by its report (services.jobreport: Slurm's time bounds, GPUs x elapsed, the
    cost model).  A job Slurm has forgotten and with no stored summary is measured over the
    span gpuwarden saw it on its GPUs."""
    if job_id is None and not user:
        raise ValueError("give job_id or user")
    matcher = f'job_id="{job_id}"' if job_id is not None else f'user="{_label(user or "")}"'
    start, end, step = resolve_window(cp, None, start, end, None, points=500, min_step=60)

    def read() -> list[Any]:
        return cp.store.range(parse_selector(f"{JOB_INFO}{{{matcher}}}"), start, end, step,
                              "max")

    seen: dict[int, dict[str, Any]] = {}
    for s in await asyncio.to_thread(read):
        jid, present = s.labels.get("job_id", ""), [t for t, v in s.points if v > 0]
        if not jid.isdigit() or not present:
            continue
        j = seen.setdefault(int(jid), {"user": s.labels.get("user", ""),
                                       "partition": s.labels.get("partition", ""),
                                       "first": present[0], "last": present[-1], "gpus": 0})
        j["first"], j["last"] = min(j["first"], present[0]), max(j["last"], present[-1])
        j["gpus"] += 1
    try:
        known = {j.job_id: j for j in jobs(cp, user=user)
                 if (job_id is None or j.job_id == job_id) and jobreport.is_gpu_job(j)
                 and j.start_time and j.start_time <= end
                 and (j.end_time is None or j.end_time >= start)}
    except GpuwardenError:  # Slurm away: the store and the stored summaries still answer
        known = {}
    now = cp.clock()
    stored = {r.job_id: r for r in await asyncio.to_thread(
        jobreport.summaries, cp, since=start, until=max(end, now), user=user,
        job_ids=[job_id] if job_id is not None else ())}
    reports = []
    for jid in sorted(set(seen) | set(known) | set(stored)):
        if jid in stored:
            reports.append(stored[jid])
        elif jid in known:
            reports.append(await jobreport.build_report(cp, known[jid]))
        else:
            j = seen[jid]
            view = SlurmJobView(job_id=jid, name="", user=j["user"], partition=j["partition"],
                                state="UNKNOWN", start_time=j["first"] - step,
                                end_time=j["last"], finished=True, alloc_gpus=j["gpus"],
                                source="metrics")
            reports.append(await jobreport.build_report(cp, view, slurm_source="metrics"))
    return [JobUsage(job_id=str(r.job_id), user=r.user, partition=r.partition,
                     gpus=[f"{g.node}/{g.index}" for g in r.per_gpu], gpu_count=r.gpus,
                     first_seen=r.start_time or 0.0, last_seen=r.end_time or r.generated_at,
                     gpu_hours=round(r.gpu_hours, 4), mean_utilization=r.mean_utilization,
                     cost=round(r.cost, 4), idle_cost=round(r.wasted, 4), state=r.state)
            for r in sorted(reports, key=lambda r: r.start_time or 0.0)]


# -- actions -----------------------------------------------------------------------------------


def _controller(cp: ControlPlane, client: httpx.AsyncClient,
                timeout: float = 30.0) -> NodeClient:
    for node in cp.inventory.nodes():
        if node.role == "controller":
            return NodeClient(client, node.url, node.token_file, timeout)
    raise SlurmNotConfigured("Slurm is not configured: no node has role: controller; Slurm "
                             "actions need one")


async def _act(cp: ControlPlane, who: str, action: str, target: str, call: Any,
               **detail: Any) -> Any:
    audit = AuditLog(cp.db)
    try:
        result = await call
    except NodeError as exc:
        audit.write(who, action, target, "failed", error=str(exc), **detail)
        raise
    audit.write(who, action, target, "executed", **detail)
    return result


async def job_action(cp: ControlPlane, client: httpx.AsyncClient, who: str, job_id: int | str,
                     action: str) -> ActionResult:
    node = _controller(cp, client)
    await _act(cp, who, f"{action}_job", str(job_id), node.slurm_job_action(str(job_id), action))
    number = int(job_id) if str(job_id).isdigit() else None
    return ActionResult(detail=f"job {job_id}: {action} done", job_id=number)


async def admin_comment(cp: ControlPlane, client: httpx.AsyncClient, who: str, job_id: int,
                        text: str) -> ActionResult:
    """Write ``text`` to the job's AdminComment (through the controller's node daemon)."""
    node = _controller(cp, client)
    await _act(cp, who, "admin_comment_job", str(job_id), node.request(
        "POST", f"/api/v1/slurm/jobs/{job_id}/admin_comment", {"comment": text}))
    return ActionResult(detail=f"job {job_id}: AdminComment written", job_id=job_id)


async def node_action(cp: ControlPlane, client: httpx.AsyncClient, who: str, node_name: str,
                      action: str, reason: str | None = None) -> ActionResult:
    node = _controller(cp, client)
    if action == "drain":
        call = node.slurm_drain(node_name, reason or "")
    else:
        call = node.slurm_resume(node_name)
    await _act(cp, who, f"{action}_node", node_name, call, reason=reason)
    return ActionResult(detail=f"node {node_name}: {action} done")




async def live_jobs(cp: ControlPlane, client: httpx.AsyncClient) -> tuple[SlurmJob, ...]:
    """The jobs Slurm has now, asked of the controller directly (not the last scrape)."""
    return await _controller(cp, client).slurm_jobs()


async def jobs_on_node(cp: ControlPlane, client: httpx.AsyncClient, node: str) -> list[str]:
    """Jobs Slurm runs (or is finishing) on ``node`` now: the check right before a node is
    stopped."""
    return jobs_on(await live_jobs(cp, client), node)


async def submit(cp: ControlPlane, client: httpx.AsyncClient, who: str,
                 body: dict[str, Any]) -> ActionResult:
    node = _controller(cp, client)
    result = await _act(cp, who, "submit_job", body.get("name") or "job",
                        node.slurm_submit(body), options={k: v for k, v in body.items()
                                                          if k != "script"})
    return ActionResult(detail="submitted", job_id=int(result["job_id"]))
