"""The node snapshot on the wire (``/api/v1/snapshot``): what a node sends, and what a
control plane accepts.

Both ends are here: the node daemon encodes its snapshot with :func:`encode_snapshot`;
the control plane's scraper decodes and checks it with :func:`decode_document`, once, and
nothing behind it checks again.  :func:`decode_document` takes the body's bytes and returns
a *clean* snapshot: plain dicts and lists of exactly the keys :func:`encode_snapshot`
writes (what the series mapping reads), each of the type it writes, every number finite
and inside the range the quantity can physically have, GPU indices unique, sizes and
cardinalities capped (:class:`Limits`).  Anything else raises
:class:`SnapshotRefused`, whose ``reason`` names the first offending part the way a reader
would find it in the JSON: ``gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: 1e+308 is outside
0..100``.  :func:`snapshot_of` turns a clean document into the typed, read-only values
services and the watchdog read (``gpu.model.DecodedSnapshot``: ``NodeGpu`` per GPU);
:func:`decode_snapshot` does both.

The rules are data: :data:`FIELD_RANGES` (by dcgm-exporter field name, in DCGM's units)
and :class:`Limits`.  The checks run as C loops over a GPU's values where they can (a
snapshot of 8 GPUs costs tens of microseconds; ``tests/metrics/test_wire.py`` has the
figure), and only a refused snapshot pays for finding *which* value broke a rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import le
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from gpuwarden import __version__
from gpuwarden.gpu.fields import CLOCK_EVENT_REASONS, FIELDS
from gpuwarden.gpu.model import (
    NO_EVENTS,
    DecodedSnapshot,
    GpuJob,
    GpuPoll,
    GpuProcess,
    NodeGpu,
    NodeInfo,
    SourceHealth,
    XidCount,
)
from gpuwarden.gpu.series import HOSTNAME_LABELS


class SnapshotRefused(ValueError):
    """A node answered something that is not a snapshot this control plane accepts;
    ``reason`` says which part and why (it is also the exception's text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on one node's snapshot.  The defaults leave an order of magnitude above the
    biggest real node (8-16 GPUs of ~35 fields; a 4-GPU snapshot is ~7 kB)."""

    max_bytes: int = 4 * 1024 * 1024  # of the body, before parsing
    max_gpus: int = 64
    max_index: int = 1023  # GPU indices are 0..max_index
    max_fields: int = 128  # per GPU
    max_series: int = 4096  # per node: fields, up and process count of every GPU, job infos
    max_processes: int = 1024  # per GPU
    max_jobs: int = 64  # per GPU
    max_xids: int = 256  # distinct XIDs per GPU
    max_clock_events: int = 64  # per GPU
    max_text: int = 1024  # characters of any string (names, errors, reasons)
    max_name: int = 200  # characters of a field, clock event or counter name
    max_ahead: float = 600.0  # seconds a snapshot's timestamp may be ahead of our clock
    max_behind: float = 86400.0  # seconds it may be behind (a stuck poller, not a clock)


LIMITS = Limits()

_MIB_MAX = float(1 << 24)  # 16 TiB in MiB: more memory than any GPU has
_COUNTER_MAX = float(1 << 64)  # NVML counters are unsigned 64-bit
_PERCENT = (0.0, 100.0)
# DCP/GPM ratios are 0..1; GPM derives them from sampled counters, which can land a hair
# over 1, so the ceiling leaves room for that (never for a value no GPU can have)
_RATIO = (0.0, 1.1)

# (lower, upper) for every field of gpu/fields.py, in DCGM's units; a field the catalogue
# does not know is only held to _ANY (finite, and no bigger than a 64-bit counter).
FIELD_RANGES: dict[str, tuple[float, float]] = {
    "DCGM_FI_DEV_SM_CLOCK": (0.0, 100_000.0),  # MHz
    "DCGM_FI_DEV_MEM_CLOCK": (0.0, 100_000.0),
    "DCGM_FI_DEV_MEMORY_TEMP": (-50.0, 200.0),  # C
    "DCGM_FI_DEV_GPU_TEMP": (-50.0, 200.0),
    "DCGM_FI_DEV_POWER_USAGE": (0.0, 10_000.0),  # W
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": (0.0, 10_000.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (0.0, _COUNTER_MAX),  # mJ
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_GPU_UTIL": _PERCENT,
    "DCGM_FI_DEV_MEM_COPY_UTIL": _PERCENT,
    "DCGM_FI_DEV_ENC_UTIL": _PERCENT,
    "DCGM_FI_DEV_DEC_UTIL": _PERCENT,
    "DCGM_FI_DEV_XID_ERRORS": (0.0, float(1 << 32)),
    "DCGM_FI_DEV_POWER_VIOLATION": (0.0, _COUNTER_MAX),  # ns
    "DCGM_FI_DEV_THERMAL_VIOLATION": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_FB_FREE": (0.0, _MIB_MAX),  # MiB
    "DCGM_FI_DEV_FB_USED": (0.0, _MIB_MAX),
    "DCGM_FI_DEV_FB_RESERVED": (0.0, _MIB_MAX),
    "DCGM_FI_DEV_FB_TOTAL": (0.0, _MIB_MAX),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_RETIRED_SBE": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_RETIRED_DBE": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_RETIRED_PENDING": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": (0.0, _COUNTER_MAX),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": (0.0, 1.0),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": _RATIO,
    "DCGM_FI_PROF_SM_ACTIVE": _RATIO,
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": _RATIO,
    "DCGM_FI_PROF_DRAM_ACTIVE": _RATIO,
    "DCGM_FI_PROF_PCIE_TX_BYTES": (0.0, _COUNTER_MAX),  # bytes/s
    "DCGM_FI_PROF_PCIE_RX_BYTES": (0.0, _COUNTER_MAX),
}
_ANY = (-float(1 << 63), _COUNTER_MAX)

assert set(FIELD_RANGES) == {f.name for f in FIELDS}, "a catalogue field without a range"

# fields with an upper bound below a 64-bit counter's: the fast path checks these by name
_BOUNDED = tuple(name for name, (_, hi) in FIELD_RANGES.items() if hi < _COUNTER_MAX)
_BOUNDED_HI = tuple(FIELD_RANGES[name][1] for name in _BOUNDED)
_KNOWN_FIELDS = frozenset(FIELD_RANGES)
_KNOWN_EVENTS = frozenset(name for name, _ in CLOCK_EVENT_REASONS)
_NUMBERS = frozenset({int, float})  # bool is a type of its own: never a number here
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")  # a Prometheus metric name
_EVENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_XID_KINDS = ("application", "hardware")


class _JobRef(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def partition(self) -> str: ...
    @property
    def source(self) -> str: ...  # "process" | "slurm"


class _CollectorStats(Protocol):
    @property
    def interval_seconds(self) -> float: ...
    @property
    def polls_total(self) -> int: ...
    @property
    def poll_failures_total(self) -> int: ...
    @property
    def last_duration_seconds(self) -> float: ...
    @property
    def last_success_timestamp(self) -> float: ...
    @property
    def errors_total(self) -> Mapping[str, int]: ...


class SnapshotSource(Protocol):
    """What the encoder reads: the node daemon's ``node.poller.NodeSnapshot``."""

    @property
    def hostname(self) -> str: ...
    @property
    def hostname_label(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def poll(self) -> GpuPoll: ...
    @property
    def jobs(self) -> Mapping[int, Sequence[_JobRef]]: ...
    @property
    def stats(self) -> _CollectorStats: ...
    def health(self, now: float) -> SourceHealth: ...


def encode_snapshot(snap: SnapshotSource, now: float) -> dict[str, Any]:
    """The document the node daemon serves for ``snap`` at ``now`` (what
    :func:`decode_document` accepts and :func:`~gpuwarden.gpu.series.node_series` maps)."""
    health = snap.health(now)
    poll = snap.poll
    gpus = []
    for g in poll.gpus:
        ident = g.identity
        gpus.append({
            "index": ident.index,
            "uuid": ident.uuid,
            "name": ident.name,
            "pci_bus_id": ident.pci_bus_id,
            "device": ident.device,
            "simulated": ident.simulated,
            "up": g.up,
            "error": g.error,
            "fields": dict(g.fields),
            "clock_events": dict(g.clock_events),
            "processes": [
                {"pid": p.pid, "used_memory_mib": p.used_memory_mib, "kind": p.kind}
                for p in g.processes
            ],
            "xids": [
                {"xid": x.xid, "count": x.count, "last_seen": x.last_seen,
                 "kind": "application" if x.application else "hardware"}
                for x in g.xids
            ],
            "last_xid": g.last_xid,
            "jobs": [
                {"job_id": j.job_id, "user": j.user, "partition": j.partition,
                 "has_process": j.source == "process"}
                for j in snap.jobs.get(ident.index, ())
            ],
        })
    stats = snap.stats
    return {
        "node": {
            "hostname": snap.hostname,
            "hostname_label": snap.hostname_label,
            "backend": poll.backend,
            "driver_version": poll.driver_version,
            "version": __version__,
            "started_at": snap.started_at,
        },
        "timestamp": poll.timestamp,
        "age_seconds": max(0.0, now - poll.timestamp),
        "health": {"state": health.state, "reason": health.reason},
        "collector": {
            "interval_seconds": stats.interval_seconds,
            "polls_total": stats.polls_total,
            "poll_failures_total": stats.poll_failures_total,
            "last_duration_seconds": stats.last_duration_seconds,
            "last_success_timestamp": stats.last_success_timestamp,
            "errors_total": dict(stats.errors_total),
        },
        "gpus": gpus,
    }


def decode_snapshot(body: bytes, now: float, limits: Limits = LIMITS) -> DecodedSnapshot:
    """The snapshot in ``body`` (the JSON bytes of ``/api/v1/snapshot``), checked against
    ``limits`` with ``now`` (unix seconds) as the control plane's clock, as typed values."""
    return snapshot_of(decode_document(body, now, limits))


def decode_document(body: bytes, now: float, limits: Limits = LIMITS) -> dict[str, Any]:
    """The clean snapshot *document* in ``body``: what :func:`gpuwarden.gpu.series.node_series`
    maps to series (the scraper needs both: this, then :func:`snapshot_of` of it)."""
    if len(body) > limits.max_bytes:
        raise SnapshotRefused(f"the snapshot is {len(body)} bytes, more than the "
                              f"{limits.max_bytes} accepted")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        text = body[:40].decode("utf-8", "replace").strip()
        shown = f" (it starts {text!r})" if text and not text.startswith("{") else ""
        raise SnapshotRefused(f"not JSON: {exc}{shown}") from None
    return validate_snapshot(doc, now, limits)


def validate_snapshot(doc: Any, now: float, limits: Limits = LIMITS) -> dict[str, Any]:
    """The clean copy of a parsed snapshot (see the module doc), or :class:`SnapshotRefused`."""
    if type(doc) is not dict:
        raise SnapshotRefused(f"not a gpuwarden node snapshot: the document is "
                              f"{_kind(doc)}, not an object")
    node = doc.get("node")
    if type(node) is not dict:
        raise SnapshotRefused(f"node: {_kind(node)}, not an object")
    hostname = node.get("hostname")
    if type(hostname) is not str or not 0 < len(hostname) <= 253:
        raise SnapshotRefused(f"node.hostname: {_shown(hostname)} is not a host name")
    host_label = node.get("hostname_label", HOSTNAME_LABELS[0])  # older nodes: Hostname
    if host_label not in HOSTNAME_LABELS:
        raise SnapshotRefused(f"node.hostname_label: {_shown(host_label)} is not one of "
                              f"{', '.join(HOSTNAME_LABELS)}")
    clean_node = {
        "hostname": hostname,
        "hostname_label": host_label,
        "backend": _text(node, "backend", "node", limits, ""),
        "driver_version": _text(node, "driver_version", "node", limits, ""),
        "version": _text(node, "version", "node", limits, ""),
        "started_at": _number(node, "started_at", "node", 0.0, _ANY[1], None),
    }
    ts = doc.get("timestamp")
    if type(ts) not in _NUMBERS or not math.isfinite(ts):
        raise SnapshotRefused(f"timestamp: {_shown(ts)} is not a unix time")
    if ts > now + limits.max_ahead or ts < now - limits.max_behind:
        off = ts - now
        raise SnapshotRefused(
            f"timestamp: {ts:.0f} is {abs(off):.0f} s {'ahead of' if off > 0 else 'behind'} "
            f"this control plane's clock (at most {limits.max_ahead:.0f} s ahead and "
            f"{limits.max_behind:.0f} s behind are accepted: check the node's clock)")
    health = doc.get("health")
    if health is None:
        clean_health: dict[str, Any] = {"state": None, "reason": None}
    elif type(health) is dict:
        clean_health = {"state": _text(health, "state", "health", limits, None),
                        "reason": _text(health, "reason", "health", limits, None)}
    else:
        raise SnapshotRefused(f"health: {_kind(health)}, not an object")
    gpus = doc.get("gpus")
    if type(gpus) is not list:
        raise SnapshotRefused(f"gpus: {_kind(gpus)}, not a list")
    if len(gpus) > limits.max_gpus:
        raise SnapshotRefused(f"gpus: {len(gpus)} GPUs, more than the {limits.max_gpus} "
                              "accepted per node")
    seen: dict[int, int] = {}
    clean_gpus = []
    series = 0
    for i, gpu in enumerate(gpus):
        clean = _gpu(gpu, f"gpus[{i}]", limits)
        index = clean["index"]
        if index in seen:
            raise SnapshotRefused(f"gpus[{i}].index: {index} is also the index of "
                                  f"gpus[{seen[index]}]")
        seen[index] = i
        series += len(clean["fields"]) + 2 + len(clean["jobs"])
        if series > limits.max_series:
            raise SnapshotRefused(f"gpus: more than {limits.max_series} series from one node "
                                  f"(at gpus[{i}])")
        clean_gpus.append(clean)
    return {
        "node": clean_node,
        "timestamp": ts,
        "age_seconds": _number(doc, "age_seconds", "", 0.0, _ANY[1], 0.0),
        "health": clean_health,
        "collector": _collector(doc.get("collector"), limits),
        "gpus": clean_gpus,
    }


def snapshot_of(doc: dict[str, Any]) -> DecodedSnapshot:
    """The typed, read-only values of a clean document (what :func:`validate_snapshot`
    returned): nothing is checked again."""
    node, health = doc["node"], doc["health"]
    collector = doc["collector"]
    return DecodedSnapshot(
        node=NodeInfo(node["hostname"], node["hostname_label"], node["backend"],
                      node["driver_version"], node["version"], node["started_at"]),
        timestamp=doc["timestamp"],
        gpus=tuple([_gpu_of(g) for g in doc["gpus"]]),
        age_seconds=doc["age_seconds"],
        health=health["state"], health_reason=health["reason"],
        collector=MappingProxyType(collector) if collector is not None else None,
    )


def snapshot_document(doc: Any, limits: Limits = LIMITS) -> DecodedSnapshot:
    """A snapshot document that was not read from a node (a bench's, a test's, a demo's)
    as typed values, checked by the same rules with its own timestamp as the clock."""
    ts = doc.get("timestamp") if type(doc) is dict else None
    now = ts if type(ts) in _NUMBERS and math.isfinite(ts) else 0.0
    return snapshot_of(validate_snapshot(doc, now, limits))


def _gpu_of(g: dict[str, Any]) -> NodeGpu:
    processes, xids, jobs, events = g["processes"], g["xids"], g["jobs"], g["clock_events"]
    return NodeGpu(
        g["index"], g["uuid"], g["name"], g["pci_bus_id"], g["device"], g["simulated"],
        g["up"], g["error"], MappingProxyType(g["fields"]),
        MappingProxyType(events) if events else NO_EVENTS,
        tuple([GpuProcess(p["pid"], p["used_memory_mib"], p["kind"]) for p in processes])
        if processes else (),
        tuple([XidCount(x["xid"], x["count"], x["last_seen"]) for x in xids]) if xids else (),
        g["last_xid"],
        tuple([GpuJob(j["job_id"], j["user"], j["partition"], j["has_process"])
               for j in jobs]) if jobs else (),
    )


def _gpu(gpu: Any, where: str, limits: Limits) -> dict[str, Any]:
    if type(gpu) is not dict:
        raise SnapshotRefused(f"{where}: {_kind(gpu)}, not an object")
    get = gpu.get
    index, up, simulated, last_xid = (get("index"), get("up"), get("simulated", False),
                                      get("last_xid"))
    if type(index) is not int:
        raise SnapshotRefused(f"{where}.index: {_shown(index)} is not an integer")
    if not 0 <= index <= limits.max_index:
        raise SnapshotRefused(f"{where}.index: {index} is outside 0..{limits.max_index}")
    if type(up) is not bool:
        raise SnapshotRefused(f"{where}.up: {_shown(up)} is not true or false")
    if type(simulated) is not bool:
        raise SnapshotRefused(f"{where}.simulated: {_shown(simulated)} is not true or false")
    if last_xid is not None and (type(last_xid) is not int or not 0 <= last_xid < 1 << 32):
        raise SnapshotRefused(f"{where}.last_xid: {_shown(last_xid)} is not an XID")
    uuid, name, bus, device, error = (get("uuid"), get("name"), get("pci_bus_id", ""),
                                      get("device", ""), get("error"))
    cap = limits.max_text
    if not (type(uuid) is str and type(name) is str and type(bus) is str
            and type(device) is str and (error is None or type(error) is str)
            and len(uuid) <= cap and len(name) <= cap and len(bus) <= cap
            and len(device) <= cap and (error is None or len(error) <= cap)):
        for key, default in (("uuid", _MISSING), ("name", _MISSING), ("pci_bus_id", ""),
                             ("device", ""), ("error", None)):
            _text(gpu, key, where, limits, default)
    processes, xids, jobs = get("processes", _NONE), get("xids", _NONE), get("jobs", _NONE)
    return {
        "index": index,
        "uuid": uuid,
        "name": name,
        "pci_bus_id": bus,
        "device": device,
        "simulated": simulated,
        "up": up,
        "error": error,
        "fields": _fields(get("fields"), f"{where}.fields", limits),
        "clock_events": _clock_events(get("clock_events", {}), f"{where}.clock_events",
                                      limits),
        "processes": _processes(processes, f"{where}.processes", limits)
        if processes or type(processes) is not list else [],
        "xids": _xids(xids, f"{where}.xids", limits) if xids or type(xids) is not list else [],
        "last_xid": last_xid,
        "jobs": _jobs(jobs, f"{where}.jobs", limits) if jobs or type(jobs) is not list else [],
    }


def _fields(fields: Any, where: str, limits: Limits) -> dict[str, float]:
    if type(fields) is not dict:
        raise SnapshotRefused(f"{where}: {_kind(fields)}, not an object")
    if len(fields) > limits.max_fields:
        raise SnapshotRefused(f"{where}: {len(fields)} fields, more than the "
                              f"{limits.max_fields} accepted per GPU")
    values = fields.values()
    if not set(map(type, values)) <= _NUMBERS:  # the usual case is this one C loop
        for name, value in fields.items():
            if type(value) not in _NUMBERS:
                raise SnapshotRefused(f"{where}.{_name(name)}: {_shown(value)} is not a number")
    if not fields.keys() <= _KNOWN_FIELDS:
        for name in fields.keys() - _KNOWN_FIELDS:
            if len(name) > limits.max_name or not _NAME.fullmatch(name):
                raise SnapshotRefused(f"{where}: {_shown(name)} is not a metric name")
    if not values:
        return fields
    # the usual case in C loops: every value finite (a NaN or an infinity makes the sum
    # one), none negative, their sum (so each of them) no more than a 64-bit counter, the
    # bounded fields under their bounds; anything else is looked at value by value (a
    # temperature below 0 C is fine, and so is a huge sum of counters that each fit)
    total = sum(values)
    if total - total != 0 or total > _COUNTER_MAX or min(values) < 0 or \
            not all(map(le, map(fields.get, _BOUNDED, _BOUNDED_HI), _BOUNDED_HI)):
        for name, value in fields.items():
            lo, hi = FIELD_RANGES.get(name, _ANY)
            if not lo <= value <= hi:  # False for NaN too
                raise SnapshotRefused(f"{where}.{_name(name)}: {_num(value)} is outside "
                                      f"{_num(lo)}..{_num(hi)}")
    return fields  # a fresh dict of the parser's: nothing else holds it


def _clock_events(events: Any, where: str, limits: Limits) -> dict[str, bool]:
    if type(events) is not dict:
        raise SnapshotRefused(f"{where}: {_kind(events)}, not an object")
    if len(events) > limits.max_clock_events:
        raise SnapshotRefused(f"{where}: {len(events)} reasons, more than the "
                              f"{limits.max_clock_events} accepted")
    if not set(map(type, events.values())) <= {bool}:
        for name, value in events.items():
            if type(value) is not bool:
                raise SnapshotRefused(f"{where}.{_name(name)}: {_shown(value)} is not true "
                                      "or false")
    if not events.keys() <= _KNOWN_EVENTS:
        for name in events.keys() - _KNOWN_EVENTS:
            if len(name) > limits.max_name or not _EVENT.fullmatch(name):
                raise SnapshotRefused(f"{where}: {_shown(name)} is not a clock event reason")
    return events


def _items(items: Any, where: str, cap: int, what: str) -> list[Any]:
    if type(items) is not list:
        raise SnapshotRefused(f"{where}: {_kind(items)}, not a list")
    if len(items) > cap:
        raise SnapshotRefused(f"{where}: {len(items)} {what}, more than the {cap} accepted")
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise SnapshotRefused(f"{where}[{i}]: {_kind(item)}, not an object")
    return items


def _processes(items: Any, where: str, limits: Limits) -> list[dict[str, Any]]:
    out = []
    for i, p in enumerate(_items(items, where, limits.max_processes, "processes")):
        at = f"{where}[{i}]"
        pid = p.get("pid")
        if type(pid) is not int or not 0 <= pid < 1 << 32:
            raise SnapshotRefused(f"{at}.pid: {_shown(pid)} is not a process id")
        out.append({"pid": pid,
                    "used_memory_mib": _number(p, "used_memory_mib", at, 0.0, _MIB_MAX, None),
                    "kind": _text(p, "kind", at, limits, "compute")})
    return out


def _xids(items: Any, where: str, limits: Limits) -> list[dict[str, Any]]:
    out = []
    for i, x in enumerate(_items(items, where, limits.max_xids, "XIDs")):
        at = f"{where}[{i}]"
        xid, count = x.get("xid"), x.get("count", 1)
        if type(xid) is not int or not 0 <= xid < 1 << 32:
            raise SnapshotRefused(f"{at}.xid: {_shown(xid)} is not an XID")
        if type(count) is not int or not 0 <= count < 1 << 63:
            raise SnapshotRefused(f"{at}.count: {_shown(count)} is not a count")
        kind = x.get("kind", "hardware")
        if kind not in _XID_KINDS:
            raise SnapshotRefused(f"{at}.kind: {_shown(kind)} is not one of "
                                  f"{', '.join(_XID_KINDS)}")
        out.append({"xid": xid, "count": count,
                    "last_seen": _number(x, "last_seen", at, 0.0, _ANY[1], 0.0), "kind": kind})
    return out


def _jobs(items: Any, where: str, limits: Limits) -> list[dict[str, Any]]:
    out = []
    for i, j in enumerate(_items(items, where, limits.max_jobs, "jobs")):
        at = f"{where}[{i}]"
        job_id = j.get("job_id")
        if type(job_id) is not str or not 0 < len(job_id) <= 64:
            raise SnapshotRefused(f"{at}.job_id: {_shown(job_id)} is not a job id")
        has_process = j.get("has_process", True)
        if type(has_process) is not bool:
            raise SnapshotRefused(f"{at}.has_process: {_shown(has_process)} is not true or "
                                  "false")
        out.append({"job_id": job_id, "user": _text(j, "user", at, limits, ""),
                    "partition": _text(j, "partition", at, limits, ""),
                    "has_process": has_process})
    return out


def _collector(collector: Any, limits: Limits) -> dict[str, Any] | None:
    if collector is None:
        return None
    if type(collector) is not dict:
        raise SnapshotRefused(f"collector: {_kind(collector)}, not an object")
    errors = collector.get("errors_total", {})
    if type(errors) is not dict or len(errors) > limits.max_clock_events or not \
            set(map(type, errors.values())) <= {int} or \
            any(len(k) > limits.max_name for k in errors):
        raise SnapshotRefused("collector.errors_total: not an object of at most "
                              f"{limits.max_clock_events} counts")
    out: dict[str, Any] = {"errors_total": errors}
    for key in ("interval_seconds", "polls_total", "poll_failures_total",
                "last_duration_seconds", "last_success_timestamp"):
        out[key] = _number(collector, key, "collector", 0.0, _ANY[1], None)
    return out


_MISSING = object()
_NONE: list[Any] = []  # a missing list (never handed out: an empty one is built instead)


def _text(doc: dict[str, Any], key: str, where: str, limits: Limits,
          default: Any = _MISSING) -> Any:
    value = doc.get(key, _MISSING)
    if value is _MISSING or (value is None and default is None):
        if default is _MISSING:
            raise SnapshotRefused(f"{_at(where, key)}: missing")
        return default
    if type(value) is not str:
        raise SnapshotRefused(f"{_at(where, key)}: {_shown(value)} is not text")
    if len(value) > limits.max_text:
        raise SnapshotRefused(f"{_at(where, key)}: {len(value)} characters, more than the "
                              f"{limits.max_text} accepted")
    return value


def _number(doc: dict[str, Any], key: str, where: str, lo: float, hi: float,
            default: Any) -> Any:
    value = doc.get(key)
    if value is None:
        return default
    if type(value) not in _NUMBERS:
        raise SnapshotRefused(f"{_at(where, key)}: {_shown(value)} is not a number")
    if not lo <= value <= hi:  # False for NaN too
        raise SnapshotRefused(f"{_at(where, key)}: {_num(value)} is outside "
                              f"{_num(lo)}..{_num(hi)}")
    return value


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    if value is None:
        return "missing or null"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _num(value: float) -> str:
    if type(value) is int:
        text = str(value) if abs(value) < 10**15 else f"{value:.6g}"
    else:
        text = f"{value:g}"
    return text


def _name(name: str) -> str:
    """A key as shown in a reason: as it is when it is a plain name, else quoted, cut."""
    if len(name) <= 80 and _NAME.fullmatch(name):
        return name
    return _shown(name)


def _shown(value: Any) -> str:
    if type(value) in (int, float):
        return _num(value)
    if type(value) is str:
        text = orjson.dumps(value).decode()
        return text if len(text) <= 60 else text[:56] + '..."'
    if value is None or type(value) is bool:
        return orjson.dumps(value).decode()
    return _kind(value)


def version_mismatch(node_version: str, expected: str) -> str | None:
    """Why a node's gpuwarden version (a snapshot's ``node.version``, or its ``/healthz``
    ``version``) is not the control plane's ``expected`` one, or None when it is: the one
    wording for the scraper, ``up`` and ``status``."""
    if node_version == expected:
        return None
    runs = f"runs gpuwarden {node_version}" if node_version else "reports no gpuwarden version"
    return (f"the node {runs}, this control plane {expected}: install {expected} on the "
            "node (a RunPod cluster: point runpod.install at it, then `gpuwarden down` and "
            "`up`)")
