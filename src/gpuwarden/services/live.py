"""The live view: overview, nodes, GPUs and the scraper's status, from the scraper's latest
snapshots (memory, no I/O).

A GPU's state, whether it is up and its share of its node's $/hr are
:func:`gpuwarden.gpu.model.gpu_state` and :func:`~gpuwarden.gpu.model.live_gpus`, worked out
once per node scrape into :class:`~gpuwarden.gpu.model.LiveGpu` values that every answer
here (and the watchdog) reads:

* ``down``: the GPU or its node does not answer;
* ``busy``: utilization at or above the idle threshold;
* ``allocated_idle``: below the threshold while a job holds it (the most wasted GPU);
* ``idle``: below the threshold and no job.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from gpuwarden.errors import NotFoundError
from gpuwarden.gpu.model import GPU_STATES, WASTED_STATES, LiveGpu, gpu_state, live_gpus
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import (
    Counts,
    GpuCounts,
    GpuDetail,
    GpuView,
    IngestStatus,
    JobRef,
    NodeDetail,
    NodeView,
    Overview,
    ProcessView,
    ScrapeStatus,
    SlurmQueue,
    Status,
)
from gpuwarden.slurm.model import SlurmSnapshot
from gpuwarden.state.inventory import Node

NotFound = NotFoundError

LIVE_MAX_AGE = 1.0  # seconds a big fleet's live view is reused while its scrapes land
BIG_FLEET = 64  # nodes; below this a view is rebuilt on every change (it costs < 10 ms)
INVENTORY_MAX_AGE = 5.0  # seconds a big fleet's inventory read is reused
WASTED = WASTED_STATES
_STATES = GPU_STATES
_WASTED_AT = tuple(GPU_STATES.index(s) for s in WASTED_STATES)


class NodeLive:
    """One node's part of the live view, rebuilt only when its scrape state changes: its
    GPUs as :class:`LiveGpu` values and the figures the overview sums, at once, and the
    node's GPU views when first asked for (8,000 pydantic views cost ~0.5 s; the overview
    needs none)."""

    __slots__ = ("_views", "cost", "figures", "gpu_count", "gpus", "key", "state")

    def __init__(self, key: tuple[Any, ...], state: TargetState, cost: float,
                 idle_below: float) -> None:
        self.key = key
        self.state = state  # immutable: the scraper swaps in a new one after each scrape
        self.cost = cost
        self.gpus = live_gpus(state.target.name, state.snapshot, state.up, state.error, cost)
        self.gpu_count = len(self.gpus)
        self.figures = _node_figures(self.gpus, idle_below)
        self._views: list[GpuView] | None = None

    def views(self, idle_below: float) -> list[GpuView]:
        if self._views is None:
            self._views = [gpu_view(g, idle_below) for g in self.gpus]
        return self._views


class LiveView:
    """The inventory, the scrape states and the nodes' views, taken together."""

    __slots__ = ("_gpus", "idle_below", "inventory", "nodes", "states")

    def __init__(self, inventory: dict[str, Node], nodes: dict[str, NodeLive],
                 idle_below: float) -> None:
        self.inventory = inventory
        self.nodes = nodes  # by node name, in node order
        self.states = [n.state for n in nodes.values()]
        self.idle_below = idle_below
        self._gpus: list[GpuView] | None = None

    @property
    def gpus(self) -> list[GpuView]:
        """Every GPU's view, in node order."""
        if self._gpus is None:
            self._gpus = [g for n in self.nodes.values() for g in n.views(self.idle_below)]
        return self._gpus


@dataclass(frozen=True, slots=True)
class Summary:
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


@dataclass(frozen=True, slots=True)
class GpuPrice:
    model: str
    memory_total_mib: float
    cost_per_hour: float  # the lowest per-GPU $/hr this fleet pays for the model


def _node_key(cp: ControlPlane, state: TargetState, cost: float) -> tuple[Any, ...]:
    """Everything a node's views are made of: its scrape state, by identity (each scrape
    publishes a new immutable one; the cached NodeLive holds it, so its id is not reused),
    its $/hr and the idle threshold."""
    return (id(state), cost, cp.config.idle_utilization_percent)


def _node_live(cp: ControlPlane, state: TargetState, cost: float,
               previous: NodeLive | None) -> NodeLive:
    key = _node_key(cp, state, cost)
    if previous is not None and previous.key == key:
        return previous
    return NodeLive(key, state, cost, cp.config.idle_utilization_percent)


def _node_figures(gpus: tuple[LiveGpu, ...], idle_below: float) -> tuple[Any, ...]:
    """What the overview sums, for one node (the same values its GpuViews carry): per-state
    GPU counts (in GPU_STATES order), utilization sum and count of up GPUs, memory used,
    memory total of up GPUs, power, $/hr of idle GPUs."""
    counts = dict.fromkeys(_STATES, 0)
    util_sum, util_n = 0.0, 0
    used = total = power = waste = 0.0
    for g in gpus:
        gpu, up = g.gpu, g.up
        fields = gpu.fields
        util = fields.get("DCGM_FI_DEV_GPU_UTIL")
        state = gpu_state(up, util, bool(gpu.jobs), idle_below)  # LiveGpu.state, inlined
        counts[state] += 1
        if up:
            if util is not None:
                util_sum += util
                util_n += 1
            used += fields.get("DCGM_FI_DEV_FB_USED") or 0
            total += gpu.memory_total_mib or 0
            power += fields.get("DCGM_FI_DEV_POWER_USAGE") or 0
        if state in WASTED:
            waste += g.cost_per_hour
    return (*counts.values(), util_sum, util_n, used, total, power, waste)


def _inventory(cp: ControlPlane, big: bool) -> dict[str, Node]:
    """The inventory by name; a big fleet's is read at most every few seconds (it changes
    with ``gpuwarden up``/``down`` and config syncs, not per scrape)."""
    views = cp.views
    cached = views.inventory
    now = time.monotonic()
    if big and cached is not None and now - cached[0] < INVENTORY_MAX_AGE:
        return cached[1]
    inventory = {n.name: n for n in cp.inventory.nodes()}
    views.inventory = (now, inventory)
    return inventory


def live_view(cp: ControlPlane) -> LiveView:
    """The inventory, copies of the scrape states and every GPU's view, taken together so
    every answer is consistent; built once per change (and for a big fleet, whose scrapes
    land continuously, at most once a second).  A rebuild only redoes the nodes scraped
    since the last one (a second of a 1,000-node fleet is ~70 nodes)."""
    version = cp.scraper.version if cp.scraper else -1
    views = cp.views
    cached = views.live
    now = time.monotonic()
    big = cached is not None and len(cached[2].states) >= BIG_FLEET
    if cached is not None and (cached[0] == version or (now - cached[1] < LIVE_MAX_AGE
                                                        and big)):
        return cached[2]
    inventory = _inventory(cp, big)
    previous = cached[2].nodes if cached is not None else {}
    nodes: dict[str, NodeLive] = {}
    if cp.scraper:
        scraped = cp.scraper.states
        for name in sorted(scraped):
            inv = inventory.get(name)
            if inv is not None:
                nodes[name] = _node_live(cp, scraped[name], inv.cost_per_hour,
                                         previous.get(name))
    live = LiveView(inventory, nodes, cp.config.idle_utilization_percent)
    views.live = (version, now, live)
    return live


def gpu_view(g: LiveGpu, idle_below: float, detail: bool = False) -> GpuView:
    gpu, up = g.gpu, g.up
    fields = gpu.fields
    values = dict(
        node=g.node,
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        state=g.state(idle_below),
        up=up,
        simulated=gpu.simulated,
        utilization=fields.get("DCGM_FI_DEV_GPU_UTIL") if up else None,
        memory_used_mib=fields.get("DCGM_FI_DEV_FB_USED") if up else None,
        memory_total_mib=gpu.memory_total_mib,
        temperature_c=fields.get("DCGM_FI_DEV_GPU_TEMP") if up else None,
        power_w=fields.get("DCGM_FI_DEV_POWER_USAGE") if up else None,
        power_limit_w=fields.get("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
        sm_clock_mhz=fields.get("DCGM_FI_DEV_SM_CLOCK") if up else None,
        throttle_reasons=sorted(r for r, on in gpu.clock_events.items()
                                if on and r != "gpu_idle"),
        xid_errors=sum(x.count for x in gpu.xids),
        last_xid=gpu.last_xid or None,
        processes=len(gpu.processes),
        jobs=[JobRef.model_construct(job_id=j.job_id, user=j.user, partition=j.partition,
                                     has_process=j.has_process) for j in gpu.jobs],
        cost_per_hour=g.cost_per_hour,
        error=g.error,
    )
    if not detail:
        # values come from snapshots the scraper has checked: skip re-validating 8,000 GPUs
        return GpuView.model_construct(**values)
    return GpuDetail(
        **values,
        fields=dict(fields),
        clock_events=dict(gpu.clock_events),
        process_list=[ProcessView(pid=p.pid, used_memory_mib=p.used_memory_mib, kind=p.kind)
                      for p in gpu.processes],
    )


def list_gpus(cp: ControlPlane, *, node: str | None = None, state: str | None = None,
              job: str | None = None, user: str | None = None) -> list[GpuView]:
    out: list[GpuView] = []
    live = live_view(cp)
    if node is not None:  # one node's views only: the others may not be built yet
        found = live.nodes.get(node)
        gpus = found.views(live.idle_below) if found is not None else []
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


def wasted_gpus(cp: ControlPlane) -> tuple[int, list[GpuView]]:
    """The fleet's GPU count and its idle and allocated-but-idle GPUs, building views for
    those only (a fleet-wide list_gpus builds every GPU's view: ~0.4 s at 8,000 GPUs)."""
    live = live_view(cp)
    idle_below = live.idle_below
    total, out = 0, []
    for n in live.nodes.values():
        total += n.gpu_count
        if not sum(n.figures[i] for i in _WASTED_AT):
            continue
        if n._views is not None:  # already built for someone else
            out += [g for g in n._views if g.state in WASTED]
            continue
        out += [gpu_view(g, idle_below) for g in n.gpus if g.state(idle_below) in WASTED]
    return total, out


def get_gpu(cp: ControlPlane, node: str, index: int) -> GpuDetail:
    live = live_view(cp)
    found = _node(cp, node, live)
    for g in found.gpus:
        if g.index == index:
            view = gpu_view(g, live.idle_below, detail=True)
            assert isinstance(view, GpuDetail)
            return view
    raise NotFound(f"node {node!r} has no GPU {index}")


def gpu_xids(cp: ControlPlane, node: str) -> dict[int, list[tuple[int, int, float]]]:
    """Each GPU's XIDs on ``node`` from its latest snapshot: GPU index -> (xid, count,
    last seen) per distinct XID, as the node daemon counts them (its
    ``gpuwarden_xid_errors_total``)."""
    return {g.index: [(x.xid, x.count, x.last_seen) for x in g.xids]
            for g in _node(cp, node).gpus}


def _node(cp: ControlPlane, node: str, live: LiveView | None = None) -> NodeLive:
    live = live_view(cp) if live is None else live
    found = live.nodes.get(node)
    if found is not None:
        return found
    names = list(live.nodes)
    known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    raise NotFound(f"no node named {node!r} (known: {known or 'none'})")


def node_state(cp: ControlPlane, node: str) -> TargetState:
    """``node``'s scrape state in the live view, or NotFound naming the known nodes."""
    return _node(cp, node).state


def _node_view(live: LiveView, n: NodeLive, detail: bool = False) -> NodeView:
    s = n.state
    inv = live.inventory[s.target.name]
    snap = s.snapshot
    info = snap.node if snap is not None else None
    values = dict(
        name=inv.name, url=inv.url, role=inv.role, provider=inv.provider,
        cost_per_hour=inv.cost_per_hour, up=s.up,
        hostname=info.hostname if info else None,
        backend=info.backend if info else None,
        simulated=snap.simulated if snap is not None else False,
        health=snap.health if s.up and snap is not None else None,
        health_reason=snap.health_reason if s.up and snap is not None else None,
        gpus=len(n.gpus), gpus_up=sum(1 for g in n.gpus if g.up),
        last_scrape=s.last_scrape or None, last_success=s.last_success or None,
        scrape_duration_seconds=s.duration if s.last_scrape else None, error=s.error,
        bad_data=s.bad_data, version=(info.version or None) if info else None,
        version_mismatch=s.version_mismatch,
    )
    if not detail:
        return NodeView(**values)
    return NodeDetail(**values, gpu_list=list(n.views(live.idle_below)))


def list_nodes(cp: ControlPlane) -> list[NodeView]:
    live = live_view(cp)
    return [_node_view(live, n) for n in live.nodes.values()]


def get_node(cp: ControlPlane, name: str) -> NodeDetail:
    live = live_view(cp)
    view = _node_view(live, _node(cp, name, live), detail=True)
    assert isinstance(view, NodeDetail)
    return view


def _summary(live: LiveView) -> Summary:
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
    return Summary(
        nodes=Counts(total=len(live.states), up=up_nodes, down=len(live.states) - up_nodes),
        gpus=GpuCounts(total=gpus, **counts),
        utilization_mean=util_sum / util_n if util_n else None,
        memory_used_mib=used, memory_total_mib=total, power_w=power, cost_per_hour=cost,
        waste_per_hour=waste, slurm=slurm, slurm_error=slurm_error)


def overview(cp: ControlPlane) -> Overview:
    """The cluster at a glance: figures of the live view (summed once per view, per node
    as its scrapes land), plus waste today and the firing alerts."""
    live = live_view(cp)
    cached = cp.views.summary
    if cached is not None and cached[0] is live:
        summary = cached[1]
    else:
        summary = _summary(live)
        cp.views.summary = (live, summary)
    from gpuwarden.services import checks, reclaim
    from gpuwarden.services.waste import waste_today

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
        checks=checks.counts(cp, controller.nodes if controller is not None else ()),
    )


def queue_view(snap: SlurmSnapshot) -> SlurmQueue:
    """The queue counts the API shows (``SlurmSnapshot.queue``'s)."""
    return SlurmQueue(**{k: snap.queue.get(k, 0) for k in SlurmQueue.model_fields})


def _slurm_queue(states: list[TargetState]) -> tuple[SlurmQueue | None, str | None]:
    for s in states:
        if s.target.role != "controller":
            continue
        if s.slurm is None:
            return None, s.slurm_error or (s.error if not s.up else "no Slurm data yet")
        return queue_view(s.slurm), None
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


def gpu_prices(cp: ControlPlane) -> list[GpuPrice]:
    """The GPU models of the live fleet, each with its memory and the lowest per-GPU $/hr
    (a node's $/hr shared by its GPUs, as ``GpuView.cost_per_hour``): every GPU price the
    cost model knows.  Read from the nodes' snapshots, once per live view."""
    live = live_view(cp)
    cached = cp.views.gpu_prices
    if cached is not None and cached[0] is live:
        return cached[1]
    best: dict[str, GpuPrice] = {}
    for n in live.nodes.values():
        if n.cost <= 0:
            continue
        for g in n.gpus:
            total, name = g.gpu.memory_total_mib, g.gpu.name
            if total is None or not name:
                continue
            old = best.get(name)
            if old is None or g.cost_per_hour < old.cost_per_hour:
                best[name] = GpuPrice(name, total, g.cost_per_hour)
    prices = sorted(best.values(), key=lambda p: (p.cost_per_hour, p.model))
    cp.views.gpu_prices = (live, prices)
    return prices
