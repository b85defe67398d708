"""The series of a node snapshot: the one mapping the node's ``/metrics`` and the control
plane's embedded store share.

:func:`node_series` turns a snapshot *document* (what ``gpuwarden.gpu.wire.encode_snapshot``
writes and :func:`gpuwarden.gpu.wire.decode_snapshot` returns, key for key) into
:class:`SeriesGroup` s: samples of one label set and one timestamp, in columns.  The node
renders the groups as its Prometheus exposition (``gpuwarden.node.exposition``); the
scraper hands the same groups, with its ``node`` label added, to the store
(``gpuwarden.metrics.ingest``).  So the embedded store holds exactly the series a
Prometheus scraping the node holds: the same names (as exposed: dcgm-exporter's counters
keep their names, ``gpuwarden_xid_errors_total`` keeps its ``_total``), the same label keys
(dcgm-exporter's ``gpu``, ``UUID``, ``pci_bus_id``, ``device``, ``modelName``,
``Hostname``, ``DCGM_FI_DRIVER_VERSION``; ``DCGM_FI_DEV_XID_ERRORS`` adds ``err_code`` and
``err_msg`` as dcgm-exporter has since 3.3.6), the same samples.

The groups are columnar for the ingest's sake (at 1,000 nodes a Python object per sample
was most of its cost): one group holds every reading of a GPU under one label dict; only
the series whose labels say more than which GPU (a clock event's ``reason``, an XID, a job)
get a group of their own.

:data:`NODE_METRICS` is the catalogue of what a node exports (type and help, in the order
``/metrics`` lists the families); the Slurm controller's ``slurm_*`` series come from
``gpuwarden.slurm.metrics`` in the same form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from prometheus_client.metrics_core import Metric

from gpuwarden.gpu.fields import FIELDS
from gpuwarden.gpu.xid_messages import xid_message

NO_LABELS: Mapping[str, str] = {}  # never changed

# dcgm-exporter's labels on every GPU series, in its order.
GPU_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname",
              "DCGM_FI_DRIVER_VERSION")
# The name of the host label: dcgm-exporter's ``Hostname`` (the default), or ``hostname``,
# what dcgm-exporter renames it to (NVIDIA/dcgm-exporter#655); a node chooses with
# ``gpuwarden node --hostname-label`` and its snapshot says which (``node.hostname_label``).
HOSTNAME_LABELS = ("Hostname", "hostname")

XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"  # from the GPU's last XID, not from its fields
GPU_UP = "gpuwarden_gpu_up"
GPU_INFO = "gpuwarden_gpu_info"
GPU_PROCESSES = "gpuwarden_gpu_processes"
CLOCK_EVENT = "gpuwarden_clock_event_active"
XID_TOTAL = "gpuwarden_xid_errors_total"
XID_LAST_SEEN = "gpuwarden_xid_last_seen_timestamp_seconds"
JOB_INFO = "gpuwarden_gpu_job_info"
BUILD_INFO = "gpuwarden_build_info"
COLLECTOR_ERRORS = "gpuwarden_collector_errors_total"


class SeriesGroup(NamedTuple):
    """Samples of one timestamp and one label set: ``names[i]`` has value ``values[i]``.
    The labels mapping may be shared by several groups and must not be changed."""

    labels: Mapping[str, str]
    timestamp: float  # unix seconds
    names: Sequence[str]
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # as exposed (and stored): a counter keeps its own name, ``_total`` or not
    type: str  # gauge | counter
    help: str


def catalogue(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: s for s in specs}


# (attribute of the snapshot's "collector" object, metric, type, help): the collector's
# self-metrics, in the order /metrics lists them
COLLECTOR_METRICS: tuple[tuple[str, MetricSpec], ...] = (
    ("last_duration_seconds", MetricSpec("gpuwarden_collector_poll_duration_seconds", "gauge",
                                         "Duration of the last GPU poll.")),
    ("last_success_timestamp", MetricSpec("gpuwarden_collector_last_success_timestamp_seconds",
                                          "gauge", "When the last GPU poll succeeded.")),
    ("interval_seconds", MetricSpec("gpuwarden_collector_interval_seconds", "gauge",
                                    "Seconds between GPU polls.")),
    ("polls_total", MetricSpec("gpuwarden_collector_polls_total", "counter",
                               "GPU polls since start.")),
    ("poll_failures_total", MetricSpec("gpuwarden_collector_poll_failures_total", "counter",
                                       "GPU polls that failed as a whole.")),
)
HEALTHY = MetricSpec("gpuwarden_collector_healthy", "gauge",
                     "1 when the GPU source is healthy, 0 when degraded (see /healthz for why).")

NODE_METRICS: dict[str, MetricSpec] = catalogue(
    MetricSpec(BUILD_INFO, "gauge", "gpuwarden version and GPU backend."),
    *(MetricSpec(f.name, f.type, f.help) for f in FIELDS),
    MetricSpec(GPU_UP, "gauge", "1 if the GPU answers, 0 if it is lost or the driver is down."),
    MetricSpec(GPU_INFO, "gauge", "GPU identity; simulated=\"true\" for simulated GPUs."),
    MetricSpec(GPU_PROCESSES, "gauge", "Processes using the GPU."),
    MetricSpec(CLOCK_EVENT, "gauge", "1 while the clock event (throttle) reason is active."),
    MetricSpec(XID_TOTAL, "counter", "XID errors seen since the daemon started, by XID; kind "
               "is application or hardware."),
    MetricSpec(XID_LAST_SEEN, "gauge", "When each XID was last seen."),
    MetricSpec(JOB_INFO, "gauge", "Job holding the GPU (1 per GPU and job); "
               "has_process=\"false\" when Slurm allocated it and no process runs."),
    *(spec for _, spec in COLLECTOR_METRICS),
    HEALTHY,
    MetricSpec(COLLECTOR_ERRORS, "counter", "Failed NVML calls by return code."),
)

# the GPU fields exported as they are (the last XID is a field of dcgm-exporter's, but the
# GPU's own last_xid is what it shows)
_FIELD_NAMES = frozenset(f.name for f in FIELDS) - {XID_ERRORS}
_UP, _DOWN = (GPU_UP,), (0.0,)
_INFO, _ONE = (GPU_INFO,), (1.0,)
_EVENT, _ACTIVE, _INACTIVE = (CLOCK_EVENT,), (1.0,), (0.0,)
_XID = (XID_TOTAL, XID_LAST_SEEN)
_LAST_XID = (XID_ERRORS,)
_JOB = (JOB_INFO,)
_BUILD = (BUILD_INFO,)
_ERRORS = (COLLECTOR_ERRORS,)
_KIND = {True: "true", False: "false"}


def build_info(version: str, backend: str, timestamp: float,
               base: Mapping[str, str] = NO_LABELS) -> SeriesGroup:
    return SeriesGroup({**base, "version": version, "backend": backend}, timestamp, _BUILD,
                       _ONE)


def node_series(doc: Mapping[str, Any],
                base: Mapping[str, str] = NO_LABELS) -> list[SeriesGroup]:
    """Every series of a node snapshot document, at its timestamp; ``base`` labels go on
    every series (the scraper's ``node``).  ``doc`` must be a clean document (see the
    module doc): nothing is checked here."""
    ts = doc["timestamp"]
    node = doc["node"]
    host, backend = node["hostname"], node["backend"]
    host_label = node["hostname_label"]
    driver = node["driver_version"]
    out = [build_info(node["version"], backend, ts, base)]
    append = out.append
    for gpu in doc["gpus"]:
        index, uuid = str(gpu["index"]), gpu["uuid"]
        labels = {**base, "gpu": index, "UUID": uuid, "pci_bus_id": gpu["pci_bus_id"],
                  "device": gpu["device"], "modelName": gpu["name"], host_label: host,
                  "DCGM_FI_DRIVER_VERSION": driver}
        if gpu["up"]:
            fields = gpu["fields"]
            if fields.keys() <= _FIELD_NAMES:  # the usual case: one C loop
                names = [GPU_UP, *fields]
                values = [1.0, *fields.values()]
            else:
                names = [GPU_UP]
                values = [1.0]
                for name, value in fields.items():
                    if name in _FIELD_NAMES:
                        names.append(name)
                        values.append(value)
            names.append(GPU_PROCESSES)
            values.append(len(gpu["processes"]))
            append(SeriesGroup(labels, ts, names, values))
            last_xid = gpu["last_xid"]
            if last_xid is not None:  # dcgm-exporter's labels: the code and its name
                code = int(last_xid)
                append(SeriesGroup({**labels, "err_code": str(code),
                                    "err_msg": xid_message(code)}, ts, _LAST_XID,
                                   (float(last_xid),)))
        else:
            append(SeriesGroup(labels, ts, _UP, _DOWN))
        append(SeriesGroup({**labels, "backend": backend,
                            "simulated": _KIND[gpu["simulated"]]}, ts, _INFO, _ONE))
        events, xids, jobs = gpu["clock_events"], gpu["xids"], gpu["jobs"]
        if events or xids or jobs:
            short = {**base, "gpu": index, "UUID": uuid, host_label: host}
            for reason, active in events.items():
                append(SeriesGroup({**short, "reason": reason}, ts, _EVENT,
                                   _ACTIVE if active else _INACTIVE))
            for x in xids:
                append(SeriesGroup({**short, "xid": str(x["xid"]), "kind": x["kind"]}, ts,
                                   _XID, (x["count"], x["last_seen"])))
            for job in jobs:
                append(SeriesGroup({**short, "job_id": job["job_id"], "user": job["user"],
                                    "partition": job["partition"],
                                    "has_process": _KIND[job["has_process"]]}, ts, _JOB, _ONE))
    collector = doc["collector"]
    if collector is not None:
        names, values = [], []
        for key, spec in COLLECTOR_METRICS:
            value = collector[key]
            if value is not None:
                names.append(spec.name)
                values.append(value)
        state = doc["health"]["state"]
        if state is not None:
            names.append(HEALTHY.name)
            values.append(1.0 if state == "ok" else 0.0)
        if names:
            append(SeriesGroup(dict(base), ts, names, values))
        for code, count in sorted(collector["errors_total"].items()):
            append(SeriesGroup({**base, "code": code}, ts, _ERRORS, (count,)))
    return out


def metric_families(groups: Sequence[SeriesGroup],
                    specs: Mapping[str, MetricSpec]) -> list[Metric]:
    """The groups as prometheus_client metric families, in the order of ``specs`` (a name
    it lacks comes last, untyped), each named exactly as its samples."""
    by_name: dict[str, Metric] = {}
    for labels, _, names, values in groups:
        for name, value in zip(names, values, strict=True):
            family = by_name.get(name)
            if family is None:
                spec = specs.get(name)
                family = by_name[name] = Metric(name, spec.help if spec else "",
                                                spec.type if spec else "unknown")
                family.name = name  # as exposed (Metric strips "_total" from a counter)
            family.add_sample(name, labels, value)
    order = {name: i for i, name in enumerate(specs)}
    return sorted(by_name.values(), key=lambda f: order.get(f.name, len(order)))
