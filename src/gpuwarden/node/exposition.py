"""``/metrics``: prometheus_client custom collectors rendered in the Prometheus text format.

:class:`GpuCollector` yields metric families computed from the latest node snapshot on
each scrape (it never touches NVML and never mutates a registry).  :func:`render` writes
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
from gpuwarden.gpu.fields import FIELDS
from gpuwarden.gpu.model import GpuIdentity
from gpuwarden.node.poller import NodeSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# dcgm-exporter's labels on every GPU series, in its order.
GPU_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname",
              "DCGM_FI_DRIVER_VERSION")


def gpu_labels(identity: GpuIdentity, hostname: str) -> dict[str, str]:
    return {
        "gpu": str(identity.index),
        "UUID": identity.uuid,
        "pci_bus_id": identity.pci_bus_id,
        "device": identity.device,
        "modelName": identity.name,
        "Hostname": hostname,
        "DCGM_FI_DRIVER_VERSION": identity.driver_version,
    }


def _family(name: str, help_: str, type_: str) -> Metric:
    metric = Metric(name, help_, type_)
    metric.name = name  # keep the name as exported (Metric strips "_total" from counters)
    return metric


class GpuCollector(Collector):
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
        build = _family("gpuwarden_build_info", "gpuwarden version and GPU backend.", "gauge")
        backend = snap.poll.backend if snap else "none"
        build.add_sample("gpuwarden_build_info", {"version": __version__, "backend": backend}, 1)
        yield build
        if snap is None:
            return
        yield from self._gpu_families(snap)
        yield from self._self_families(snap)

    def _gpu_families(self, snap: NodeSnapshot) -> Iterator[Metric]:
        host = snap.hostname
        gpus = snap.poll.gpus
        labels = {g.index: gpu_labels(g.identity, host) for g in gpus}
        short = {g.index: {"gpu": str(g.index), "UUID": g.identity.uuid, "Hostname": host}
                 for g in gpus}

        for spec in FIELDS:
            family = None
            for g in gpus:
                if not g.up:
                    continue
                if spec.name == "DCGM_FI_DEV_XID_ERRORS":
                    value = None if g.last_xid is None else float(g.last_xid)
                else:
                    value = g.fields.get(spec.name)
                if value is None:
                    continue
                if family is None:
                    family = _family(spec.name, spec.help, spec.type)
                family.add_sample(spec.name, labels[g.index], value)
            if family is not None:
                yield family

        up = _family("gpuwarden_gpu_up", "1 if the GPU answers, 0 if it is lost or the driver "
                     "is down.", "gauge")
        info = _family("gpuwarden_gpu_info", "GPU identity; simulated=\"true\" for simulated "
                       "GPUs.", "gauge")
        procs = _family("gpuwarden_gpu_processes", "Processes using the GPU.", "gauge")
        for g in gpus:
            up.add_sample("gpuwarden_gpu_up", labels[g.index], 1.0 if g.up else 0.0)
            info.add_sample(
                "gpuwarden_gpu_info",
                {**labels[g.index], "backend": snap.poll.backend,
                 "simulated": "true" if g.identity.simulated else "false"},
                1.0,
            )
            if g.up:
                procs.add_sample("gpuwarden_gpu_processes", labels[g.index], len(g.processes))
        yield up
        yield info
        yield procs

        events = _family("gpuwarden_clock_event_active", "1 while the clock event (throttle) "
                         "reason is active.", "gauge")
        xids = _family("gpuwarden_xid_errors_total", "XID errors seen since the daemon started, "
                       "by XID; kind is application or hardware.", "counter")
        xid_seen = _family("gpuwarden_xid_last_seen_timestamp_seconds",
                           "When each XID was last seen.", "gauge")
        jobs = _family("gpuwarden_gpu_job_info", "Job holding the GPU (1 per GPU and job); "
                       "has_process=\"false\" when Slurm allocated it and no process runs.",
                       "gauge")
        for g in gpus:
            base = short[g.index]
            for reason, active in g.clock_events.items():
                events.add_sample("gpuwarden_clock_event_active", {**base, "reason": reason},
                                  1.0 if active else 0.0)
            for x in g.xids:
                xl = {**base, "xid": str(x.xid),
                      "kind": "application" if x.application else "hardware"}
                xids.add_sample("gpuwarden_xid_errors_total", xl, x.count)
                xid_seen.add_sample("gpuwarden_xid_last_seen_timestamp_seconds", xl, x.last_seen)
            for job in snap.jobs.get(g.index, ()):
                jobs.add_sample(
                    "gpuwarden_gpu_job_info",
                    {**base, "job_id": job.job_id, "user": job.user, "partition": job.partition,
                     "has_process": "true" if job.source == "process" else "false"},
                    1.0,
                )
        yield events
        yield xids
        yield xid_seen
        yield jobs

    def _self_families(self, snap: NodeSnapshot) -> Iterator[Metric]:
        stats = snap.stats
        health = snap.health(self._clock())
        for name, help_, type_, value in (
            ("gpuwarden_collector_poll_duration_seconds", "Duration of the last GPU poll.",
             "gauge", stats.last_duration_seconds),
            ("gpuwarden_collector_last_success_timestamp_seconds",
             "When the last GPU poll succeeded.", "gauge", stats.last_success_timestamp),
            ("gpuwarden_collector_interval_seconds", "Seconds between GPU polls.", "gauge",
             stats.interval_seconds),
            ("gpuwarden_collector_polls_total", "GPU polls since start.", "counter",
             stats.polls_total),
            ("gpuwarden_collector_poll_failures_total", "GPU polls that failed as a whole.",
             "counter", stats.poll_failures_total),
            ("gpuwarden_collector_healthy", "1 when the GPU source is healthy, 0 when degraded "
             "(see /healthz for why).", "gauge", 1.0 if health.ok else 0.0),
        ):
            family = _family(name, help_, type_)
            family.add_sample(name, {}, value)
            yield family
        errors = _family("gpuwarden_collector_errors_total",
                         "Failed NVML calls by return code.", "counter")
        for code, count in sorted(stats.errors_total.items()):
            errors.add_sample("gpuwarden_collector_errors_total", {"code": code}, count)
        yield errors


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
