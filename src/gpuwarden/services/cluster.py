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
import logging
import math
import threading
import time
from collections.abc import Sequence
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
    SeriesLabels,
    SeriesList,
    SeriesView,
    SlurmQueue,
    Status,
)
from gpuwarden.state.inventory import Node

NotFound = NotFoundError
log = logging.getLogger(__name__)


RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
HISTORY_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
)


class _NodeLive:
    """One node's part of the live view, rebuilt only when its scrape state changes: the
    figures the overview sums, at once (from the snapshot's dicts), and the node's GPU views
    when first asked for (8,000 pydantic views cost ~0.5 s; the overview needs none)."""

    __slots__ = ("_gpus", "cost", "figures", "gpu_count", "key", "state")

    def __init__(self, cp: ControlPlane, key: tuple[Any, ...], state: TargetState,
                 cost: float) -> None:
        self.key = key
        self.state = state  # a copy: the scraper goes on updating its own
        self.cost = cost
        gpus = (state.snapshot or {}).get("gpus", [])
        self.gpu_count = len(gpus)
        self.figures = _node_figures(cp, state, gpus, cost / len(gpus) if gpus else 0.0)
        self._gpus: list[GpuView] | None = None

    def gpus(self, cp: ControlPlane) -> list[GpuView]:
        if self._gpus is None:
            self._gpus = _gpus_of(cp, self.state, self.cost)
        return self._gpus


class _Live:
    """The inventory, the scrape states and the nodes' views, taken together."""

    __slots__ = ("_cp", "_gpus", "inventory", "nodes", "states")

    def __init__(self, cp: ControlPlane, inventory: dict[str, Node],
                 nodes: dict[str, _NodeLive]) -> None:
        self.inventory = inventory
        self.nodes = nodes  # by node name, in node order
        self.states = [n.state for n in nodes.values()]
        self._cp = cp
        self._gpus: list[GpuView] | None = None

    @property
    def gpus(self) -> list[GpuView]:
        """Every GPU of every node, in node order."""
        if self._gpus is None:
            self._gpus = [g for n in self.nodes.values() for g in n.gpus(self._cp)]
        return self._gpus


LIVE_MAX_AGE = 1.0  # seconds a big fleet's live view is reused while its scrapes land
BIG_FLEET = 64  # nodes; below this a view is rebuilt on every change (it costs < 10 ms)
INVENTORY_MAX_AGE = 5.0  # seconds a big fleet's inventory read is reused
_STATES = ("busy", "idle", "allocated_idle", "down")


def _node_key(cp: ControlPlane, state: TargetState, cost: float) -> tuple[Any, ...]:
    """Everything a node's views are made of: a new scrape changes scrapes_total and
    last_scrape; the snapshot is held by the cached copy, so its id is not reused."""
    return (state.scrapes_total, state.last_scrape, id(state.snapshot), state.up, state.error,
            state.bad_data, state.duration, id(state.slurm), state.slurm_error, state.last_success,
            state.target, cost, cp.config.idle_utilization_percent)


def _node_live(cp: ControlPlane, state: TargetState, cost: float,
               previous: _NodeLive | None) -> _NodeLive:
    key = _node_key(cp, state, cost)
    if previous is not None and previous.key == key:
        return previous
    return _NodeLive(cp, key, copy.copy(state), cost)


def _gpu_state(cp: ControlPlane, up: bool, util: float | None, has_jobs: bool) -> str:
    """The GPU state rules (module doc): the one place they are written."""
    if not up:
        return "down"
    if util is not None and util >= cp.config.idle_utilization_percent:
        return "busy"
    return "allocated_idle" if has_jobs else "idle"


def _memory_total(fields: dict[str, Any]) -> float | None:
    total = fields.get("DCGM_FI_DEV_FB_TOTAL")
    used, free = fields.get("DCGM_FI_DEV_FB_USED"), fields.get("DCGM_FI_DEV_FB_FREE")
    if total is None and used is not None and free is not None:
        total = used + free + fields.get("DCGM_FI_DEV_FB_RESERVED", 0.0)
    return total


def _node_figures(cp: ControlPlane, state: TargetState, gpus: list[dict[str, Any]],
                  per_gpu: float) -> tuple[Any, ...]:
    """What the overview sums, for one node, straight from its snapshot (the same values
    its GpuViews carry): per-state GPU counts (in _STATES order), utilization sum and count
    of up GPUs, memory used, memory total of up GPUs, power, $/hr of idle GPUs."""
    counts = dict.fromkeys(_STATES, 0)
    util_sum, util_n = 0.0, 0
    used = total = power = waste = 0.0
    for gpu in gpus:
        fields = gpu.get("fields") or {}
        up = bool(gpu.get("up")) and state.up
        util = fields.get("DCGM_FI_DEV_GPU_UTIL")
        gpu_state = _gpu_state(cp, up, util, bool(gpu.get("jobs")))
        counts[gpu_state] += 1
        if up:
            if util is not None:
                util_sum += util
                util_n += 1
            used += fields.get("DCGM_FI_DEV_FB_USED") or 0
            total += _memory_total(fields) or 0
            power += fields.get("DCGM_FI_DEV_POWER_USAGE") or 0
        if gpu_state in ("idle", "allocated_idle"):
            waste += per_gpu
    return (*counts.values(), util_sum, util_n, used, total, power, waste)


def _inventory(cp: ControlPlane, big: bool) -> dict[str, Node]:
    """The inventory by name; a big fleet's is read at most every few seconds (it changes
    with ``gpuwarden up``/``down`` and config syncs, not per scrape)."""
    cached = cp.cache.get("live_inventory")
    now = time.monotonic()
    if big and cached is not None and now - cached[0] < INVENTORY_MAX_AGE:
        return cached[1]
    inventory = {n.name: n for n in cp.inventory.nodes()}
    cp.cache["live_inventory"] = (now, inventory)
    return inventory


def _live(cp: ControlPlane) -> _Live:
    """The inventory, copies of the scrape states and every GPU's view, taken together so
    every answer is consistent; built once per change (and for a big fleet, whose scrapes
    land continuously, at most once a second).  A rebuild only redoes the nodes scraped
    since the last one (a second of a 1,000-node fleet is ~70 nodes)."""
    version = cp.scraper.version if cp.scraper else -1
    cached = cp.cache.get("live")
    now = time.monotonic()
    big = cached is not None and len(cached[2].states) >= BIG_FLEET
    if cached is not None and (cached[0] == version or (now - cached[1] < LIVE_MAX_AGE
                                                        and big)):
        return cached[2]
    inventory = _inventory(cp, big)
    previous = cached[2].nodes if cached is not None else {}
    nodes: dict[str, _NodeLive] = {}
    if cp.scraper:
        scraped = cp.scraper.states
        for name in sorted(scraped):
            inv = inventory.get(name)
            if inv is not None:
                nodes[name] = _node_live(cp, scraped[name], inv.cost_per_hour,
                                         previous.get(name))
    live = _Live(cp, inventory, nodes)
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
    gpu_state = _gpu_state(cp, up, util, bool(jobs))
    used = fields.get("DCGM_FI_DEV_FB_USED")
    total = _memory_total(fields)
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
    live = _live(cp)
    if node is not None:  # one node's views only: the others may not be built yet
        found = live.nodes.get(node)
        gpus = found.gpus(cp) if found is not None else []
    else:
        gpus = live.gpus
    for g in gpus:
        if state is not None and g.state != state:
            continue
        if job is not None and job not in {j.job_id for j in g.jobs}:
            continue
        if user is not None and user not in {j.user for j in g.jobs}:
            continue
        out.append(g)
    return out


WASTED = ("idle", "allocated_idle")


def wasted_gpus(cp: ControlPlane) -> tuple[int, list[GpuView]]:
    """The fleet's GPU count and its idle and allocated-but-idle GPUs, building views for
    those only (a fleet-wide list_gpus builds every GPU's view: ~0.4 s at 8,000 GPUs)."""
    live = _live(cp)
    total, out = 0, []
    idle_at = [_STATES.index(s) for s in WASTED]
    for n in live.nodes.values():
        total += n.gpu_count
        if not sum(n.figures[i] for i in idle_at):
            continue
        if n._gpus is not None:  # already built for someone else
            out += [g for g in n._gpus if g.state in WASTED]
            continue
        per_gpu = n.cost / n.gpu_count if n.gpu_count else 0.0
        for gpu in (n.state.snapshot or {}).get("gpus", []):
            up = bool(gpu.get("up")) and n.state.up
            util = (gpu.get("fields") or {}).get("DCGM_FI_DEV_GPU_UTIL")
            if _gpu_state(cp, up, util, bool(gpu.get("jobs"))) in WASTED:
                out.append(_gpu_view(cp, n.state, gpu, per_gpu))
    return total, out


def get_gpu(cp: ControlPlane, node: str, index: int) -> GpuDetail:
    live = _live(cp)
    state = _state(cp, node, live)
    for g in _gpus_of(cp, state, live.inventory[node].cost_per_hour, detail=True):
        if g.index == index:
            assert isinstance(g, GpuDetail)
            return g
    raise NotFound(f"node {node!r} has no GPU {index}")


def gpu_xids(cp: ControlPlane, node: str) -> dict[int, list[tuple[int, int, float]]]:
    """Each GPU's XIDs on ``node`` from its latest snapshot: GPU index -> (xid, count,
    last seen) per distinct XID, as the node daemon counts them (its
    ``gpuwarden_xid_errors_total``)."""
    snapshot = _state(cp, node).snapshot or {}
    return {int(g["index"]): [(int(x["xid"]), int(x.get("count", 1)),
                               float(x.get("last_seen") or 0.0)) for x in g.get("xids", [])]
            for g in snapshot.get("gpus", [])}


def _state(cp: ControlPlane, node: str, live: _Live | None = None) -> TargetState:
    live = _live(cp) if live is None else live
    found = live.nodes.get(node)
    if found is not None:
        return found.state
    names = list(live.nodes)
    known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    raise NotFound(f"no node named {node!r} (known: {known or 'none'})")


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
        bad_data=s.bad_data, version=(snap.get("node") or {}).get("version") or None,
        version_mismatch=s.version_mismatch,
    )
    if not detail:
        return NodeView(**values)
    found = live.nodes.get(inv.name)
    return NodeDetail(**values, gpu_list=list(found.gpus(cp)) if found is not None else [])


def list_nodes(cp: ControlPlane) -> list[NodeView]:
    return [_node_view(cp, s) for s in _states(cp)]


def get_node(cp: ControlPlane, name: str) -> NodeDetail:
    live = _live(cp)
    view = _node_view(cp, _state(cp, name, live), detail=True)
    assert isinstance(view, NodeDetail)
    return view


WASTE_TODAY_TTL = 60.0  # seconds between recomputations (a day's history at 1-minute steps)
WASTE_FINAL_LAG = 300.0  # seconds after which a minute's samples are all in: its count is final


@dataclass
class _WasteDay:
    """Idle GPU-minutes counted so far today, per node: minutes that ended more than
    WASTE_FINAL_LAG ago are counted once and kept, so a refresh reads only the last few
    minutes of every GPU instead of the whole day."""

    midnight: float
    final_until: float  # the newest final minute's query point (midnight: none yet)
    idle_minutes: dict[str, int]


def _idle_minutes(cp: ControlPlane, start: float, end: float, into: dict[str, int]) -> None:
    """Count the 1-minute points in (start, end] (aligned to ``start``) that averaged under
    the idle threshold, per node."""
    if end < start + 60.0:
        return
    threshold = cp.config.idle_utilization_percent
    for s in cp.store.range(parse_selector("DCGM_FI_DEV_GPU_UTIL"), start + 60.0, end, 60.0,
                            "avg"):
        idle = sum(1 for _, v in s.points if v < threshold)
        if idle:
            node = s.labels.get("node", "")
            into[node] = into.get(node, 0) + idle


def _compute_waste_today(cp: ControlPlane, now: float, per_gpu: dict[str, float]) -> float:
    midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
    day: _WasteDay | None = cp.cache.get("waste_day")
    if day is None or day.midnight != midnight:
        day = _WasteDay(midnight, midnight, {})
    final_cut = midnight + (now - WASTE_FINAL_LAG - midnight) // 60.0 * 60.0
    if final_cut > day.final_until:
        counted = dict(day.idle_minutes)
        _idle_minutes(cp, day.final_until, final_cut, counted)
        day = _WasteDay(midnight, final_cut, counted)
    cp.cache["waste_day"] = day
    recent: dict[str, int] = {}
    _idle_minutes(cp, day.final_until, now, recent)
    minutes = {n: day.idle_minutes.get(n, 0) + recent.get(n, 0)
               for n in {*day.idle_minutes, *recent}}
    return sum(per_gpu.get(node, 0.0) * count * 60.0 / 3600.0
               for node, count in minutes.items())


def _refresh_waste_today(cp: ControlPlane, now: float, per_gpu: dict[str, float]) -> None:
    lock = cp.cache.setdefault("waste_today_lock", threading.Lock())
    with lock:
        cached = cp.cache.get("waste_today")
        if cached is not None and now - cached[0] < WASTE_TODAY_TTL:
            return  # another caller refreshed it meanwhile
        try:
            value: float | None = (_compute_waste_today(cp, now, per_gpu) if per_gpu
                                   else 0.0)
        except Exception:  # a store that cannot answer leaves the figure unknown
            log.debug("waste today: the store could not answer", exc_info=True)
            value = None
        cp.cache["waste_today"] = (now, value)


def waste_today(cp: ControlPlane) -> float | None:
    """$ spent since local midnight on GPUs under the idle threshold: every stored minute a
    GPU averaged below it costs that minute of its node's $/hr share.  Computed from the
    store's per-minute rollups, at most once a minute.  For a big fleet the refresh runs in
    a background thread and the figure of the last one is answered meanwhile (None before
    the first), so an overview never waits on the store."""
    cached = cp.cache.get("waste_today")
    now = cp.clock()
    if cached is not None and now - cached[0] < WASTE_TODAY_TTL:
        return cached[1]
    live = _live(cp)
    per_gpu = {}
    for name, node in live.inventory.items():
        found = live.nodes.get(name)
        count = found.gpu_count if found is not None else 0
        if count and node.cost_per_hour > 0:
            per_gpu[name] = node.cost_per_hour / count
    if len(live.nodes) < BIG_FLEET:
        _refresh_waste_today(cp, now, per_gpu)
        return cp.cache["waste_today"][1]
    running: threading.Thread | None = cp.cache.get("waste_today_thread")
    if running is None or not running.is_alive():
        thread = threading.Thread(target=_refresh_waste_today, args=(cp, now, per_gpu),
                                  name="waste-today", daemon=True)
        cp.cache["waste_today_thread"] = thread
        thread.start()
    return cached[1] if cached is not None else None


@dataclass(frozen=True, slots=True)
class _Summary:
    """The overview's figures of one live view (computed once per view, not per request)."""

    nodes: Counts
    gpus: GpuCounts
    utilization_mean: float | None
    memory_used_mib: float
    memory_total_mib: float
    power_w: float
    cost_per_hour: float
    waste_per_hour: float
    slurm: SlurmQueue | None
    slurm_error: str | None


def _summary(live: _Live) -> _Summary:
    nodes = live.nodes.values()
    sums = [sum(column) for column in zip(*(n.figures for n in nodes), strict=True)] or \
        [0] * len(_STATES) + [0.0, 0, 0.0, 0.0, 0.0, 0.0]
    up = [n for n in nodes if n.state.up]
    up_nodes = len(up)
    cost = sum(live.inventory[n.state.target.name].cost_per_hour for n in up)
    gpus = sum(n.gpu_count for n in nodes)
    counts = dict(zip(_STATES, sums[:len(_STATES)], strict=True))
    util_sum, util_n, used, total, power, waste = sums[len(_STATES):]
    slurm, slurm_error = _slurm_queue(live.states)
    return _Summary(
        nodes=Counts(total=len(live.states), up=up_nodes, down=len(live.states) - up_nodes),
        gpus=GpuCounts(total=gpus, **counts),
        utilization_mean=util_sum / util_n if util_n else None,
        memory_used_mib=used, memory_total_mib=total, power_w=power, cost_per_hour=cost,
        waste_per_hour=waste, slurm=slurm, slurm_error=slurm_error)


def overview(cp: ControlPlane) -> Overview:
    """The cluster at a glance: figures of the live view (summed once per view, per node
    as its scrapes land), plus waste today and the firing alerts."""
    live = _live(cp)
    cached = cp.cache.get("live_summary")
    if cached is not None and cached[0] is live:
        summary = cached[1]
    else:
        summary = _summary(live)
        cp.cache["live_summary"] = (live, summary)
    from gpuwarden.services import checks, reclaim

    saved = reclaim.saved(cp)
    controller = next((s.slurm for s in live.states
                       if s.target.role == "controller" and s.slurm is not None), None)
    return Overview(
        cluster=cp.config.cluster,
        generated_at=cp.clock(),
        nodes=summary.nodes.model_copy(),
        gpus=summary.gpus.model_copy(),
        utilization_mean=summary.utilization_mean,
        memory_used_mib=summary.memory_used_mib,
        memory_total_mib=summary.memory_total_mib,
        power_w=summary.power_w,
        cost_per_hour=summary.cost_per_hour,
        waste_per_hour=summary.waste_per_hour,
        waste_today=waste_today(cp),
        reclaim_saved_today=saved[0], reclaim_saved_month=saved[1],
        alerts_active=cp.watchdog.alerts.firing_count() if cp.watchdog else 0,
        slurm=summary.slurm.model_copy() if summary.slurm is not None else None,
        slurm_error=summary.slurm_error,
        checks=checks.counts(cp, (controller or {}).get("nodes", [])),
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
    """Versions, scrape and ingest counters: read from the scraper's states directly, never
    through the GPU views (the bench and monitors poll it)."""
    from gpuwarden import __version__

    scraper = cp.scraper
    if scraper is not None:
        inventory = _inventory(cp, len(scraper.states) >= BIG_FLEET)
        states = [s for name, s in list(scraper.states.items()) if name in inventory]
    else:
        states = []
    ingest = scraper.ingest if scraper else None
    return Status(
        version=__version__,
        store=cp.config.store.kind,
        scrape_interval_seconds=cp.config.scrape.interval,
        scrape=ScrapeStatus(
            targets=len(states), up=sum(s.up for s in states),
            lateness_seconds=scraper.schedule.lateness_seconds if scraper else 0.0,
            max_lateness_seconds=scraper.schedule.max_lateness_seconds if scraper else 0.0,
            scrapes_total=sum(s.scrapes_total for s in states),
            failures_total=sum(s.failures_total for s in states),
            garbage_total=sum(s.garbage_total for s in states),
            bad_data={s.target.name: s.bad_data for s in states if s.bad_data},
        ),
        ingest=IngestStatus(**(dataclasses.asdict(ingest) if ingest else dict(
            batches=0, samples=0, failed_batches=0, lag_seconds=0.0, queued=0))),
    )


# -- history and queries ----------------------------------------------------------------------


def _fit_range(start: float, end: float, step: float) -> tuple[float, float]:
    """``end`` and ``step`` as a store answers them: an end before the start is the start
    (one instant), and a step too fine for 11,000 points per series (Prometheus' limit)
    raised to the whole milliseconds that fit; the result says the step it used."""
    if step <= 0:
        raise ValueError("step must be greater than 0")
    end = max(end, start)
    return end, max(step, math.ceil((end - start) * 1000 / (11_000 - 2)) / 1000)


def resolve_window(cp: ControlPlane, range_: str | None, start: float | None, end: float | None,
                   step: float | None, points: int = 240, min_step: float = 1.0,
                   ) -> tuple[float, float, float]:
    """A query's window.  Without ``step``, about ``points`` steps of at least ``min_step``
    whole seconds, and ``start`` moved back so the last point falls on ``end`` (query points
    are ``start + k * step``: a step that does not divide the range would end early)."""
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
        step = float(max(min_step, math.ceil((end - start) / points)))
        start = end - step * math.ceil((end - start) / step)
    end, step = _fit_range(start, end, step)
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


async def series(cp: ControlPlane, selectors: Sequence[str], *, limit: int = 1000
                 ) -> SeriesList:
    """The label sets of the series any of ``selectors`` matches (Prometheus'
    ``/api/v1/series?match[]=...``), sorted, each once."""
    parsed = [parse_selector(text) for text in selectors]
    found: dict[tuple[str, tuple[tuple[str, str], ...]], None] = {}
    for selector in parsed:
        for labels in await asyncio.to_thread(cp.store.series, selector):
            found[(selector.metric, tuple(sorted(labels.items())))] = None
    keys = sorted(found)
    return SeriesList(match=[str(s) for s in parsed], truncated=len(keys) > limit,
                      series=[SeriesLabels(metric=m, labels=dict(labels))
                              for m, labels in keys[:limit]])


# -- what the cost model knows of GPU prices ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuPrice:
    model: str
    memory_total_mib: float
    cost_per_hour: float  # the lowest per-GPU $/hr this fleet pays for the model


def gpu_prices(cp: ControlPlane) -> list[GpuPrice]:
    """The GPU models of the live fleet, each with its memory and the lowest per-GPU $/hr
    (a node's $/hr shared by its GPUs, as ``GpuView.cost_per_hour``): every GPU price the
    cost model knows.  Read from the nodes' snapshots, once per live view."""
    live = _live(cp)
    cached = cp.cache.get("gpu_prices")
    if cached is not None and cached[0] is live:
        return cached[1]
    best: dict[str, GpuPrice] = {}
    for n in live.nodes.values():
        gpus = (n.state.snapshot or {}).get("gpus", [])
        if not gpus or n.cost <= 0:
            continue
        per_gpu = n.cost / len(gpus)
        for gpu in gpus:
            total = _memory_total(gpu.get("fields") or {})
            name = str(gpu.get("name") or "")
            if total is None or not name:
                continue
            old = best.get(name)
            if old is None or per_gpu < old.cost_per_hour:
                best[name] = GpuPrice(name, total, per_gpu)
    prices = sorted(best.values(), key=lambda p: (p.cost_per_hour, p.model))
    cp.cache["gpu_prices"] = (live, prices)
    return prices
