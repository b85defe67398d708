"""Slurm through the control plane: reads come from the controller node's latest scraped
Slurm document; actions go to the controller's node daemon, under the caller's identity,
and are written to the audit log."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.metrics.ingest import JOB_INFO
from gpuwarden.metrics.model import parse_selector
from gpuwarden.nodeclient import NodeClient, NodeError
from gpuwarden.services.cluster import NotFound, list_gpus, resolve_window
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import (
    ActionResult,
    JobEfficiency,
    JobUsage,
    SlurmJobDetail,
    SlurmJobView,
    SlurmNodeView,
    SlurmPartitionView,
    SlurmQueue,
    SlurmSummary,
)
from gpuwarden.slurm.model import not_found_text
from gpuwarden.state.audit import AuditLog


class SlurmUnavailable(GpuwardenError):
    """The controller is configured but its Slurm data is not there (yet)."""


class SlurmNotConfigured(NotFoundError):
    """No node has role: controller."""


def _document(cp: ControlPlane) -> dict[str, Any]:
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


def _fields(model: type, data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in model.model_fields}


def summary(cp: ControlPlane) -> SlurmSummary:
    doc = _document(cp)
    gpus = doc.get("gpus", {})
    return SlurmSummary(
        collected_at=doc["collected_at"], up=doc["up"], errors=doc.get("errors", {}),
        queue=SlurmQueue(**_fields(SlurmQueue, doc.get("queue", {}))),
        pending_reasons=doc.get("pending_reasons", {}),
        gpus_total=gpus.get("total", 0), gpus_alloc=gpus.get("alloc", 0),
        gpus_idle=gpus.get("idle", 0),
        accounting=bool((doc.get("accounting") or {}).get("available")),
        finished_source=str((doc.get("accounting") or {}).get("finished_source") or "squeue"))


def jobs(cp: ControlPlane, *, state: str | None = None, user: str | None = None,
         partition: str | None = None) -> list[SlurmJobView]:
    return [SlurmJobView(**_fields(SlurmJobView, j)) for j in _document(cp)["jobs"]
            if (state is None or j["state"] == state.upper())
            and (user is None or j["user"] == user)
            and (partition is None or j["partition"] == partition)]


def nodes(cp: ControlPlane) -> list[SlurmNodeView]:
    return [SlurmNodeView(**_fields(SlurmNodeView, n)) for n in _document(cp)["nodes"]]


def partitions(cp: ControlPlane) -> list[SlurmPartitionView]:
    doc = _document(cp)
    by_node = {n["name"]: n for n in doc["nodes"]}
    out = []
    for p in doc["partitions"]:
        members = [by_node[n] for n in p.get("nodes", []) if n in by_node]
        out.append(SlurmPartitionView(**_fields(SlurmPartitionView, p),
                                      gpus_total=sum(n.get("gpus_total", 0) for n in members),
                                      gpus_alloc=sum(n.get("gpus_alloc", 0) for n in members)))
    return out


async def job(cp: ControlPlane, job_id: int) -> SlurmJobDetail:
    doc = _document(cp)
    found = next((j for j in doc["jobs"] if j["job_id"] == job_id), None)
    if found is None:
        raise NotFound(not_found_text(job_id, doc.get("accounting") or {}))
    detail = SlurmJobDetail(**_fields(SlurmJobDetail, found))
    held = {(node, i) for node, indices in detail.gpu_detail.items() for i in indices}
    detail.gpus = [g for name in sorted({n for n, _ in held}) for g in list_gpus(cp, node=name)
                   if (g.node, g.index) in held]
    if held and detail.start_time:
        detail.efficiency = await _efficiency(cp, detail, held)
    return detail


async def _efficiency(cp: ControlPlane, job: SlurmJobDetail,
                      held: set[tuple[str, int]]) -> JobEfficiency:
    start, end, step = resolve_window(cp, None, float(job.start_time or 0), cp.clock(), None,
                                      points=200, min_step=15)
    nodes_re = "|".join(sorted({n for n, _ in held}))

    def read() -> tuple[list[Any], list[Any]]:
        util = cp.store.range(parse_selector(f'DCGM_FI_DEV_GPU_UTIL{{node=~"{nodes_re}"}}'),
                              start, end, step, "avg")
        mem = cp.store.range(parse_selector(f'DCGM_FI_DEV_FB_USED{{node=~"{nodes_re}"}}'),
                             start, end, step, "avg")
        return util, mem

    util, mem = await asyncio.to_thread(read)

    def mine(series: list[Any]) -> list[Any]:
        return [s for s in series if (s.labels.get("node"), int(s.labels.get("gpu", -1))) in held]

    util = mine(util)
    buckets: dict[float, list[float]] = {}
    for s in util:
        for t, v in s.points:
            buckets.setdefault(t, []).append(v)
    curve = [(t, sum(v) / len(v)) for t, v in sorted(buckets.items())]
    mem_values = [v for s in mine(mem) for _, v in s.points]
    values = [v for s in util for _, v in s.points]
    return JobEfficiency(
        start=start, end=end, points=len(values), utilization=curve,
        mean_utilization=sum(values) / len(values) if values else None,
        mean_memory_used_mib=sum(mem_values) / len(mem_values) if mem_values else None)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


async def job_history(cp: ControlPlane, *, job_id: int | None = None, user: str | None = None,
                      start: float, end: float) -> list[JobUsage]:
    """Jobs' GPU use between ``start`` and ``end`` from the metrics store: which GPUs held
    each job when (``gpuwarden_gpu_job_info``), their utilization then, GPU-hours and $.
    Works for jobs Slurm has long forgotten."""
    if job_id is None and not user:
        raise ValueError("give job_id or user")
    matcher = f'job_id="{job_id}"' if job_id is not None else f'user="{_label(user or "")}"'
    start, end, step = resolve_window(cp, None, start, end, None, points=500, min_step=60)

    def read() -> tuple[list[Any], list[Any]]:
        info = cp.store.range(parse_selector(f"{JOB_INFO}{{{matcher}}}"), start, end, step,
                              "max")
        if not info:
            return [], []
        names = "|".join(re.escape(n) for n in sorted({s.labels.get("node", "") for s in info}))
        util = cp.store.range(parse_selector(f'DCGM_FI_DEV_GPU_UTIL{{node=~"{names}"}}'),
                              start, end, step, "avg")
        return info, util

    info, util = await asyncio.to_thread(read)
    by_gpu = {(s.labels.get("node"), s.labels.get("gpu")): dict(s.points) for s in util}
    live = {(g.node, str(g.index)): g.cost_per_hour
            for name in sorted({s.labels.get("node", "") for s in info})
            for g in list_gpus(cp, node=name)}
    threshold = cp.config.idle_utilization_percent
    jobs: dict[str, dict[str, Any]] = {}
    for s in info:
        key = (s.labels.get("node"), s.labels.get("gpu"))
        present = [t for t, v in s.points if v > 0]
        if not present:
            continue
        j = jobs.setdefault(s.labels.get("job_id", ""), {
            "user": s.labels.get("user", ""), "partition": s.labels.get("partition", ""),
            "gpus": set(), "first": present[0], "last": present[-1], "points": 0,
            "util": [], "cost": 0.0, "idle_cost": 0.0})
        j["gpus"].add(f"{key[0]}/{key[1]}")
        j["first"], j["last"] = min(j["first"], present[0]), max(j["last"], present[-1])
        j["points"] += len(present)
        rate = live.get(key, 0.0) * step / 3600.0
        for t in present:
            j["cost"] += rate
            value = by_gpu.get(key, {}).get(t)
            if value is not None:
                j["util"].append(value)
                if value < threshold:
                    j["idle_cost"] += rate
    return [JobUsage(job_id=jid, user=j["user"], partition=j["partition"],
                     gpus=sorted(j["gpus"]), first_seen=j["first"], last_seen=j["last"],
                     gpu_hours=round(j["points"] * step / 3600.0, 4),
                     mean_utilization=(sum(j["util"]) / len(j["util"]) if j["util"] else None),
                     cost=round(j["cost"], 4), idle_cost=round(j["idle_cost"], 4))
            for jid, j in sorted(jobs.items(), key=lambda kv: kv[1]["first"])]


# -- actions -----------------------------------------------------------------------------------


def _controller(cp: ControlPlane, client: httpx.AsyncClient) -> NodeClient:
    for node in cp.inventory.nodes():
        if node.role == "controller":
            return NodeClient(client, node.url, node.token_file)
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


async def job_action(cp: ControlPlane, client: httpx.AsyncClient, who: str, job_id: int,
                     action: str) -> ActionResult:
    node = _controller(cp, client)
    await _act(cp, who, f"{action}_job", str(job_id), node.slurm_job_action(str(job_id), action))
    return ActionResult(detail=f"job {job_id}: {action} done", job_id=job_id)


async def node_action(cp: ControlPlane, client: httpx.AsyncClient, who: str, node_name: str,
                      action: str, reason: str | None = None) -> ActionResult:
    node = _controller(cp, client)
    if action == "drain":
        call = node.slurm_drain(node_name, reason or "")
    else:
        call = node.slurm_resume(node_name)
    await _act(cp, who, f"{action}_node", node_name, call, reason=reason)
    return ActionResult(detail=f"node {node_name}: {action} done")


async def submit(cp: ControlPlane, client: httpx.AsyncClient, who: str,
                 body: dict[str, Any]) -> ActionResult:
    node = _controller(cp, client)
    result = await _act(cp, who, "submit_job", body.get("name") or "job",
                        node.slurm_submit(body), options={k: v for k, v in body.items()
                                                          if k != "script"})
    return ActionResult(detail="submitted", job_id=int(result["job_id"]))
