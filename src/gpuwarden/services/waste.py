"""Waste today: $ spent since local midnight on GPUs under the idle threshold, from the
metrics store's per-minute rollups (``ControlPlane.views`` holds the day counted so far and
the last figure)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from gpuwarden.metrics.model import parse_selector
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.live import BIG_FLEET, live_view

log = logging.getLogger(__name__)

WASTE_TODAY_TTL = 60.0  # seconds between recomputations (a day's history at 1-minute steps)
WASTE_FINAL_LAG = 300.0  # seconds after which a minute's samples are all in: its count is final


@dataclass(frozen=True, slots=True)
class WasteDay:
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
    day = cp.views.waste_day
    if day is None or day.midnight != midnight:
        day = WasteDay(midnight, midnight, {})
    final_cut = midnight + (now - WASTE_FINAL_LAG - midnight) // 60.0 * 60.0
    if final_cut > day.final_until:
        counted = dict(day.idle_minutes)
        _idle_minutes(cp, day.final_until, final_cut, counted)
        day = WasteDay(midnight, final_cut, counted)
    cp.views.waste_day = day
    recent: dict[str, int] = {}
    _idle_minutes(cp, day.final_until, now, recent)
    minutes = {n: day.idle_minutes.get(n, 0) + recent.get(n, 0)
               for n in {*day.idle_minutes, *recent}}
    return sum(per_gpu.get(node, 0.0) * count * 60.0 / 3600.0
               for node, count in minutes.items())


def _refresh_waste_today(cp: ControlPlane, now: float, per_gpu: dict[str, float]) -> None:
    views = cp.views
    with views.waste_lock:
        cached = views.waste_today
        if cached is not None and now - cached[0] < WASTE_TODAY_TTL:
            return  # another caller refreshed it meanwhile
        try:
            value: float | None = (_compute_waste_today(cp, now, per_gpu) if per_gpu
                                   else 0.0)
        except Exception:  # a store that cannot answer leaves the figure unknown
            log.debug("waste today: the store could not answer", exc_info=True)
            value = None
        views.waste_today = (now, value)


def waste_today(cp: ControlPlane) -> float | None:
    """$ spent since local midnight on GPUs under the idle threshold: every stored minute a
    GPU averaged below it costs that minute of its node's $/hr share.  Computed from the
    store's per-minute rollups, at most once a minute.  For a big fleet the refresh runs in
    a background thread and the figure of the last one is answered meanwhile (None before
    the first), so an overview never waits on the store."""
    views = cp.views
    cached = views.waste_today
    now = cp.clock()
    if cached is not None and now - cached[0] < WASTE_TODAY_TTL:
        return cached[1]
    live = live_view(cp)
    per_gpu = {name: n.gpus[0].cost_per_hour for name, n in live.nodes.items()
               if n.gpus and n.cost > 0}  # each GPU's share of its node's $/hr
    if len(live.nodes) < BIG_FLEET:
        _refresh_waste_today(cp, now, per_gpu)
        done = views.waste_today
        return done[1] if done is not None else None
    running = views.waste_thread
    if running is None or not running.is_alive():
        thread = threading.Thread(target=_refresh_waste_today, args=(cp, now, per_gpu),
                                  name="waste-today", daemon=True)
        views.waste_thread = thread
        thread.start()
    return cached[1] if cached is not None else None
