"""``/metrics``: prometheus_client custom collectors rendered in the Prometheus text format.

:class:`GpuCollector` yields metric families computed from the latest node snapshot on
each scrape (it never touches NVML and never mutates a registry), through the series
mapping the control plane's ingest shares (:mod:`gpuwarden.gpu.series`).  :func:`render` writes
families exactly as named: dcgm-exporter's counters carry no ``_total`` suffix
(``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``), and prometheus_client's own renderer would
rename them, breaking NVIDIA's dashboards and existing alert rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gpuwarden import __version__
from gpuwarden.gpu.series import (
    GPU_LABELS,
    NODE_METRICS,
    build_info,
    metric_families,
    node_series,
)
from gpuwarden.gpu.wire import encode_snapshot
from gpuwarden.node.poller import NodeSnapshot

__all__ = ["CONTENT_TYPE", "GPU_LABELS", "Exposition", "GpuCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GpuCollector(Collector):
    """The node's series: its snapshot document (``gpu.wire.encode_snapshot``, what
    ``/api/v1/snapshot`` serves) through :func:`~gpuwarden.gpu.series.node_series`, the
    mapping the control plane's ingest uses, so ``/metrics`` and the embedded store hold the
    same series."""

    def __init__(
        self,
        snapshot: Callable[[], NodeSnapshot | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._clock = clock

    def cache_key(self) -> object:
        """Changes whenever :meth:`collect` would yield something else: a new poll, or the
        health turning stale between polls."""
        snap = self._snapshot()
        if snap is None:
            return None
        return (id(snap), snap.health(self._clock()).state)

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            groups = [build_info(__version__, "none", self._clock())]
        else:
            groups = node_series(encode_snapshot(snap, self._clock()))
        yield from metric_families(groups, NODE_METRICS)


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class Exposition:
    """Renders collectors, reusing a collector's text while its ``cache_key()`` is unchanged:
    between two polls every scrape gets the same bytes without rendering them again."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = list(collectors)
        self._cache: dict[int, tuple[object, bytes]] = {}

    def render(self) -> bytes:
        parts = []
        for i, collector in enumerate(self._collectors):
            key_fn = getattr(collector, "cache_key", None)
            key = key_fn() if key_fn is not None else None
            cached = self._cache.get(i)
            if key is not None and cached is not None and cached[0] == key:
                parts.append(cached[1])
                continue
            text = render([collector])
            if key is not None:
                self._cache[i] = (key, text)
            parts.append(text)
        return b"".join(parts)


def render(collectors: Iterable[Collector]) -> bytes:
    """The Prometheus text exposition (0.0.4) of every family, names kept as yielded."""
    out: list[str] = []
    append = out.append
    for collector in collectors:
        for metric in collector.collect():
            name = metric.name
            samples = [s for s in metric.samples if not s.name.endswith("_created")]
            if not samples:
                continue
            mtype = metric.type
            if mtype == "counter" and samples[0].name == name + "_total":
                name += "_total"  # a family made the prometheus_client way
            elif mtype == "info":
                mtype = "gauge"
            elif mtype == "unknown":
                mtype = "untyped"
            append(f"# HELP {name} {_escape_help(metric.documentation)}\n")
            append(f"# TYPE {name} {mtype}\n")
            for s in samples:
                if s.labels:
                    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                    append(f"{s.name}{{{label_text}}} {floatToGoString(s.value)}\n")
                else:
                    append(f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode()
