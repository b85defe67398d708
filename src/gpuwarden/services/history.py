"""History and metric queries: a GPU's recent series, selector queries and series lists,
read from the metrics store (in a thread: the store's calls block)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from gpuwarden.metrics.model import AGGREGATIONS, Selector, parse_selector
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.live import node_state
from gpuwarden.services.models import (
    GpuHistory,
    QueryResult,
    SeriesLabels,
    SeriesList,
    SeriesView,
)

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
HISTORY_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
)



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
    node_state(cp, node)  # NotFound for a node the live view lacks
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
