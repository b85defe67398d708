"""Cluster reads: overview, nodes, GPUs, their history and metric queries.

Live views come from the scraper's latest snapshots (memory, no I/O); history comes from the
metrics store.  The GPU state rules live here and nowhere else:

* ``down``: the GPU or its node does not answer;
* ``busy``: utilization at or above the idle threshold;
* ``allocated_idle``: below the threshold while a job holds it (the most wasted GPU);
* ``idle``: below the threshold and no job.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from gpuwarden.errors import NotFoundError
from gpuwarden.metrics.model import AGGREGATIONS, Selector, parse_selector
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import (
    Counts,
    GpuCounts,
    GpuDetail,
    GpuHistory,
    GpuView,
    IngestStatus,
    JobRef,
    NodeDetail,
    NodeView,
    Overview,
    ProcessView,
    QueryResult,
    ScrapeStatus,
    SeriesView,
    SlurmQueue,
    Status,
)
from gpuwarden.state.inventory import Node

NotFound = NotFoundError


RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
HISTORY_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
)


@dataclass(frozen=True, slots=True)
class _Live:
    inventory: dict[str, Node]
    states: list[TargetState]
    gpus: list[GpuView]  # every GPU of every node, in node order


LIVE_MAX_AGE = 1.0  # seconds a big fleet's live view is reused while its scrapes land
BIG_FLEET = 64  # nodes; below this a view is rebuilt on every change (it costs < 10 ms)


def _live(cp: ControlPlane) -> _Live:
    """The inventory, copies of the scrape states and every GPU's view, taken together so
    every answer is consistent; built once per change (and for a big fleet, whose scrapes
    land continuously, at most once a second)."""
    version = cp.scraper.version if cp.scraper else -1
    cached = cp.cache.get("live")
    now = time.monotonic()
    if cached is not None and (cached[0] == version or (
            now - cached[1] < LIVE_MAX_AGE and len(cached[2].states) >= BIG_FLEET)):
        return cached[2]
    inventory = {n.name: n for n in cp.inventory.nodes()}
    # copies: the scraper goes on updating its states while a request reads these
    states = ([copy.copy(s) for name, s in sorted(cp.scraper.states.items())
               if name in inventory] if cp.scraper else [])
    gpus = [g for st in states for g in _gpus_of(cp, st, inventory[st.target.name].cost_per_hour)]
    live = _Live(inventory, states, gpus)
    cp.cache["live"] = (version, now, live)
    return live


def _states(cp: ControlPlane) -> list[TargetState]:
    return _live(cp).states


def _gpu_view(cp: ControlPlane, state: TargetState, gpu: dict[str, Any], per_gpu_cost: float,
              detail: bool = False) -> GpuView:
    fields = gpu.get("fields") or {}
    up = bool(gpu.get("up")) and state.up
    jobs = [JobRef.model_construct(**j) for j in gpu.get("jobs", [])]
    util = fields.get("DCGM_FI_DEV_GPU_UTIL")
    if not up:
        gpu_state = "down"
    elif util is not None and util >= cp.config.idle_utilization_percent:
        gpu_state = "busy"
    elif jobs:
        gpu_state = "allocated_idle"
    else:
        gpu_state = "idle"
    used, free, reserved = (fields.get("DCGM_FI_DEV_FB_USED"), fields.get("DCGM_FI_DEV_FB_FREE"),
                            fields.get("DCGM_FI_DEV_FB_RESERVED", 0.0))
    total = fields.get("DCGM_FI_DEV_FB_TOTAL")
    if total is None and used is not None and free is not None:
        total = used + free + reserved
    values = dict(
        node=state.target.name,
        index=int(gpu["index"]),
        uuid=gpu["uuid"],
        name=gpu["name"],
        state=gpu_state,
        up=up,
        simulated=bool(gpu.get("simulated")),
        utilization=util if up else None,
        memory_used_mib=used if up else None,
        memory_total_mib=total,
        temperature_c=fields.get("DCGM_FI_DEV_GPU_TEMP") if up else None,
        power_w=fields.get("DCGM_FI_DEV_POWER_USAGE") if up else None,
        power_limit_w=fields.get("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
        sm_clock_mhz=fields.get("DCGM_FI_DEV_SM_CLOCK") if up else None,
        throttle_reasons=sorted(r for r, on in (gpu.get("clock_events") or {}).items()
                                if on and r != "gpu_idle"),
        xid_errors=sum(x["count"] for x in gpu.get("xids", [])),
        last_xid=gpu.get("last_xid") or None,
        processes=len(gpu.get("processes", [])),
        jobs=jobs,
        cost_per_hour=per_gpu_cost,
        error=gpu.get("error") or (None if state.up else state.error),
    )
    if not detail:
        # values come from snapshots the scraper has checked: skip re-validating 8,000 GPUs
        return GpuView.model_construct(**values)
    return GpuDetail(
        **values,
        fields=fields,
        clock_events=gpu.get("clock_events") or {},
        process_list=[ProcessView(**p) for p in gpu.get("processes", [])],
    )


def _gpus_of(cp: ControlPlane, state: TargetState, cost: float,
             detail: bool = False) -> list[GpuView]:
    gpus = (state.snapshot or {}).get("gpus", [])
    per_gpu = cost / len(gpus) if gpus else 0.0
    return [_gpu_view(cp, state, g, per_gpu, detail) for g in gpus]


def list_gpus(cp: ControlPlane, *, node: str | None = None, state: str | None = None,
              job: str | None = None, user: str | None = None) -> list[GpuView]:
    out: list[GpuView] = []
    for g in _live(cp).gpus:
        if node is not None and g.node != node:
            continue
        if state is not None and g.state != state:
            continue
        if job is not None and job not in {j.job_id for j in g.jobs}:
            continue
        if user is not None and user not in {j.user for j in g.jobs}:
            continue
        out.append(g)
    return out


def get_gpu(cp: ControlPlane, node: str, index: int) -> GpuDetail:
    state = _state(cp, node)
    for g in _gpus_of(cp, state, _live(cp).inventory[node].cost_per_hour, detail=True):
        if g.index == index:
            assert isinstance(g, GpuDetail)
            return g
    raise NotFound(f"node {node!r} has no GPU {index}")


def _state(cp: ControlPlane, node: str) -> TargetState:
    for s in _states(cp):
        if s.target.name == node:
            return s
    known = ", ".join(s.target.name for s in _states(cp)) or "none"
    raise NotFound(f"no node named {node!r} (known: {known})")


def _node_view(cp: ControlPlane, s: TargetState, detail: bool = False) -> NodeView:
    live = _live(cp)
    inv = live.inventory[s.target.name]
    snap = s.snapshot or {}
    gpus = snap.get("gpus", [])
    health = snap.get("health") or {}
    values = dict(
        name=inv.name, url=inv.url, role=inv.role, provider=inv.provider,
        cost_per_hour=inv.cost_per_hour, up=s.up,
        hostname=(snap.get("node") or {}).get("hostname"),
        backend=(snap.get("node") or {}).get("backend"),
        simulated=any(g.get("simulated") for g in gpus),
        health=health.get("state") if s.up else None,
        health_reason=health.get("reason") if s.up else None,
        gpus=len(gpus), gpus_up=sum(1 for g in gpus if g.get("up")) if s.up else 0,
        last_scrape=s.last_scrape or None, last_success=s.last_success or None,
        scrape_duration_seconds=s.duration if s.last_scrape else None, error=s.error,
    )
    if not detail:
        return NodeView(**values)
    return NodeDetail(**values, gpu_list=[g for g in live.gpus if g.node == inv.name])


def list_nodes(cp: ControlPlane) -> list[NodeView]:
    return [_node_view(cp, s) for s in _states(cp)]


def get_node(cp: ControlPlane, name: str) -> NodeDetail:
    view = _node_view(cp, _state(cp, name), detail=True)
    assert isinstance(view, NodeDetail)
    return view


WASTE_TODAY_TTL = 60.0  # seconds between recomputations (a day's history at 1-minute steps)


def waste_today(cp: ControlPlane) -> float | None:
    """$ spent since local midnight on GPUs under the idle threshold: every stored minute a
    GPU averaged below it costs that minute of its node's $/hr share.  Computed from the
    store's per-minute rollups, at most once a minute."""
    cached = cp.cache.get("waste_today")
    now = cp.clock()
    if cached is not None and now - cached[0] < WASTE_TODAY_TTL:
        return cached[1]
    live = _live(cp)
    per_gpu = {}
    for name, node in live.inventory.items():
        count = sum(1 for g in live.gpus if g.node == name)
        if count and node.cost_per_hour > 0:
            per_gpu[name] = node.cost_per_hour / count
    if not per_gpu:
        value: float | None = 0.0
    else:
        midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
        step = 60.0
        try:
            series = cp.store.range(parse_selector("DCGM_FI_DEV_GPU_UTIL"), midnight + step,
                                    now, step, "avg")
            threshold = cp.config.idle_utilization_percent
            value = sum(per_gpu.get(s.labels.get("node", ""), 0.0) * step / 3600.0
                        for s in series for _, v in s.points if v < threshold)
        except Exception:  # a store that cannot answer leaves the figure unknown
            value = None
    cp.cache["waste_today"] = (now, value)
    return value


def overview(cp: ControlPlane) -> Overview:
    live = _live(cp)
    states, gpus = live.states, live.gpus
    costs = {name: n.cost_per_hour for name, n in live.inventory.items()}
    counts = GpuCounts(total=len(gpus))
    for g in gpus:
        setattr(counts, g.state, getattr(counts, g.state) + 1)
    up_gpus = [g for g in gpus if g.up and g.utilization is not None]
    up_nodes = sum(1 for s in states if s.up)
    slurm, slurm_error = _slurm_queue(states)
    return Overview(
        cluster=cp.config.cluster,
        generated_at=cp.clock(),
        nodes=Counts(total=len(states), up=up_nodes, down=len(states) - up_nodes),
        gpus=counts,
        utilization_mean=(sum(g.utilization or 0 for g in up_gpus) / len(up_gpus)
                          if up_gpus else None),
        memory_used_mib=sum(g.memory_used_mib or 0 for g in gpus),
        memory_total_mib=sum(g.memory_total_mib or 0 for g in gpus if g.up),
        power_w=sum(g.power_w or 0 for g in gpus),
        cost_per_hour=sum(costs.get(s.target.name, 0.0) for s in states if s.up),
        waste_per_hour=sum(g.cost_per_hour for g in gpus if g.state in ("idle", "allocated_idle")),
        waste_today=waste_today(cp),
        alerts_active=cp.watchdog.alerts.firing_count() if cp.watchdog else 0,
        slurm=slurm,
        slurm_error=slurm_error,
    )


def _slurm_queue(states: list[TargetState]) -> tuple[SlurmQueue | None, str | None]:
    for s in states:
        if s.target.role != "controller":
            continue
        if s.slurm is None:
            return None, s.slurm_error or (s.error if not s.up else "no Slurm data yet")
        queue = s.slurm.get("queue", {})
        return SlurmQueue(**{k: int(queue.get(k, 0)) for k in SlurmQueue.model_fields}), None
    return None, None


def status(cp: ControlPlane) -> Status:
    from gpuwarden import __version__

    states = _states(cp)
    ingest = cp.scraper.ingest if cp.scraper else None
    return Status(
        version=__version__,
        store=cp.config.store.kind,
        scrape_interval_seconds=cp.config.scrape.interval,
        scrape=ScrapeStatus(
            targets=len(states), up=sum(s.up for s in states),
            lateness_seconds=cp.scraper.schedule.lateness_seconds if cp.scraper else 0.0,
            max_lateness_seconds=cp.scraper.schedule.max_lateness_seconds if cp.scraper
            else 0.0,
            scrapes_total=sum(s.scrapes_total for s in states),
            failures_total=sum(s.failures_total for s in states),
            garbage_total=sum(s.garbage_total for s in states),
        ),
        ingest=IngestStatus(**(dataclasses.asdict(ingest) if ingest else dict(
            batches=0, samples=0, failed_batches=0, lag_seconds=0.0, queued=0))),
    )


# -- history and queries ----------------------------------------------------------------------


def _check_range(start: float, end: float, step: float) -> None:
    if end <= start:
        raise ValueError("end must be after start")
    if step <= 0:
        raise ValueError("step must be greater than 0")
    if (end - start) / step > 11_000:
        raise ValueError(f"{(end - start) / step:.0f} points asked; at most 11,000 per series: "
                         "raise step")


def resolve_window(cp: ControlPlane, range_: str | None, start: float | None, end: float | None,
                   step: float | None, points: int = 240) -> tuple[float, float, float]:
    now = cp.clock()
    if range_ is not None:
        if range_ not in RANGES:
            raise ValueError(f"range {range_!r}: use one of {', '.join(RANGES)} or start/end")
        end = now if end is None else end
        start = end - RANGES[range_]
    else:
        end = now if end is None else end
        start = end - 3600 if start is None else start
    if step is None:
        step = max(1.0, round((end - start) / points))
    _check_range(start, end, step)
    return start, end, step


async def gpu_history(cp: ControlPlane, node: str, index: int, *, range_: str | None = "1h",
                      start: float | None = None, end: float | None = None,
                      step: float | None = None, aggregation: str = "avg") -> GpuHistory:
    _state(cp, node)
    start, end, step = resolve_window(cp, range_ if start is None else None, start, end, step)
    series: dict[str, list[tuple[float, float]]] = {}

    def read() -> None:
        for metric in HISTORY_METRICS:
            selector = parse_selector(f'{metric}{{node="{node}",gpu="{index}"}}')
            found = cp.store.range(selector, start, end, step, aggregation)  # type: ignore[arg-type]
            series[metric] = [tuple(p) for p in found[0].points] if found else []

    await asyncio.to_thread(read)
    return GpuHistory(node=node, index=index, start=start, end=end, step=step, series=series)


async def query(cp: ControlPlane, selector_text: str, *, start: float | None = None,
                end: float | None = None, step: float | None = None,
                aggregation: str = "avg", limit: int = 500) -> QueryResult:
    selector: Selector = parse_selector(selector_text)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r}: use one of {', '.join(AGGREGATIONS)}")
    if start is None and end is None:
        found = await asyncio.to_thread(cp.store.latest, selector)
        window: tuple[float | None, float | None, float | None] = (None, None, None)
    else:
        s, e, st = resolve_window(cp, None, start, end, step)
        found = await asyncio.to_thread(cp.store.range, selector, s, e, st, aggregation)
        window = (s, e, st)
    return QueryResult(
        selector=str(selector), start=window[0], end=window[1], step=window[2],
        aggregation=aggregation if window[0] is not None else None,
        series=[SeriesView(metric=x.metric, labels=dict(x.labels),
                           points=[tuple(p) for p in x.points]) for x in found[:limit]],
    )
