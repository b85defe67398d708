"""The Slurm snapshot on the wire (the controller's ``GET /api/v1/slurm``): encoded from
the :class:`~gpuwarden.slurm.model.SlurmSnapshot` the controller's collector made, and
decoded back into one.

The controller's daemon writes the document with :func:`encode_summary` (every field of
the snapshot, its jobs, nodes, partitions and scheduler stats, plus derived counts for
readers); the control plane's scraper decodes it here, once, so the ``slurm_*`` series
it stores come from the same snapshot type, through the same function
(:func:`gpuwarden.slurm.metrics.slurm_series`), as the controller's ``/metrics``.

Every field is held to the type the model gives it; anything else raises
:class:`~gpuwarden.gpu.wire.SnapshotRefused` naming the field
(``jobs[3].num_cpus: "eight" is not an integer``).  A key the document lacks takes the
model's default, so a controller of an older version still decodes; keys the model does not
know (the derived counts) are ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import orjson

from gpuwarden.gpu.wire import SnapshotRefused
from gpuwarden.slurm.gres import GresItem
from gpuwarden.slurm.model import (
    NO_GPU_DETAIL,
    SchedulerStats,
    SlurmJob,
    SlurmNode,
    SlurmPartition,
    SlurmSnapshot,
)

_MISSING = object()
_NONE = type(None)
_INT = frozenset({int})
_OPT_INT = frozenset({int, _NONE})
_NUM = frozenset({int, float})
_OPT_NUM = frozenset({int, float, _NONE})
_STR = frozenset({str})
_OPT_STR = frozenset({str, _NONE})
_BOOL = frozenset({bool})

Check = frozenset[type] | Callable[[Any, str], Any]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if type(value) is not list or not all(type(v) is str for v in value):
        raise SnapshotRefused(f"{where}: not a list of text")
    return tuple(value)


def _ints(value: Any, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if type(value) is not list or not all(type(v) is int for v in value):
        raise SnapshotRefused(f"{where}: not a list of integers")
    return tuple(value)


def _gpu_detail(value: Any, where: str) -> Mapping[str, tuple[int, ...]]:
    if type(value) is not dict:
        raise SnapshotRefused(f"{where}: not an object")
    if not value:
        return NO_GPU_DETAIL
    return {_key(k, where): _ints(v, f"{where}.{k}") or () for k, v in value.items()}


def _gres(value: Any, where: str) -> tuple[GresItem, ...]:
    return _records(GresItem, _GRES, value, where)


def _key(key: str, where: str) -> str:
    if type(key) is not str:
        raise SnapshotRefused(f"{where}: a key is not text")
    return key


_JOB: dict[str, Check] = {
    "job_id": _INT, "name": _STR, "user": _STR, "partition": _STR, "state": _STR,
    "reason": _STR, "nodes": _strings, "num_nodes": _INT, "num_cpus": _INT, "comment": _STR,
    "array_job_id": _OPT_INT, "array_task_id": _OPT_STR, "tres_per_node": _STR,
    "tres_per_job": _STR, "tres_per_task": _STR, "submit_time": _OPT_NUM,
    "start_time": _OPT_NUM, "time_limit_s": _OPT_INT, "priority": _OPT_INT,
    "gpu_detail": _gpu_detail, "end_time": _OPT_NUM, "exit_code": _OPT_INT,
    "signal": _OPT_INT, "elapsed_s": _OPT_INT, "account": _STR, "qos": _STR,
    "alloc_gpus": _OPT_INT,
    "source": _STR,
}
_GRES: dict[str, Check] = {"name": _STR, "type": _OPT_STR, "count": _INT, "indices": _ints,
                           "sockets": _ints}
_NODE: dict[str, Check] = {
    "name": _STR, "state": _STR, "state_raw": _STR, "flags": _strings, "reason": _STR,
    "reason_time": _OPT_NUM, "reason_user": _STR, "partitions": _strings,
    "cpus_alloc": _INT, "cpus_idle": _INT, "cpus_other": _INT, "cpus_total": _INT,
    "memory_mb": _INT, "alloc_memory_mb": _INT, "gres": _gres, "gres_used": _gres,
}
_PARTITION: dict[str, Check] = {"name": _STR, "available": _STR, "default": _BOOL,
                                "nodes": _strings, "time_limit": _STR}
_STATS: dict[str, Check] = {
    name: _OPT_NUM if name in ("collected_at", "stats_since") else _INT
    for name in SchedulerStats.__dataclass_fields__
}
# in the order of the fields: the fast path builds records from columns, by position
assert list(_JOB) == list(SlurmJob.__dataclass_fields__), "SlurmJob's fields changed"
assert list(_NODE) == list(SlurmNode.__dataclass_fields__), "SlurmNode's fields changed"
assert list(_PARTITION) == list(SlurmPartition.__dataclass_fields__)
assert list(_GRES) == list(GresItem.__dataclass_fields__)

_KIND = {int: "an integer", float: "a number", str: "text", bool: "true or false",
         _NONE: "null"}


def _record(cls: Callable[..., Any], checks: Mapping[str, Check], raw: Any,
            where: str) -> Any:
    if type(raw) is not dict:
        raise SnapshotRefused(f"{where}: not an object")
    kwargs = {}
    get = raw.get
    for key, check in checks.items():
        value = get(key, _MISSING)
        if value is _MISSING:
            continue
        if type(check) is frozenset:
            if type(value) not in check:
                wanted = " or ".join(sorted(_KIND[t] for t in check))
                raise SnapshotRefused(f"{_at(where, key)}: {_shown(value)} is not {wanted}")
            kwargs[key] = value
        else:
            kwargs[key] = check(value, _at(where, key))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise SnapshotRefused(f"{where}: {exc}") from None


def _records(cls: Callable[..., Any], checks: Mapping[str, Check], items: Any,
             key: str) -> tuple[Any, ...]:
    """The records of the list ``items`` (at ``key``).  The usual case (every record has every
    field, each of its type) is checked a column at a time in C loops and built by
    position; anything else goes record by record, to name the first field at fault."""
    if type(items) is not list:
        raise SnapshotRefused(f"{key}: not a list")
    if not items:
        return ()
    if set(map(type, items)) == {dict}:
        try:
            columns = [list(map(itemgetter(name), items)) for name in checks]
            for i, check in enumerate(checks.values()):
                if type(check) is frozenset:
                    if not set(map(type, columns[i])) <= check:
                        break
                else:
                    columns[i] = [check(v, key) for v in columns[i]]
            else:
                return tuple(map(cls, *columns))
        except (KeyError, SnapshotRefused):
            pass
    return tuple(_record(cls, checks, item, f"{key}[{i}]") for i, item in enumerate(items))


def _map(doc: Mapping[str, Any], key: str, kinds: frozenset[type]) -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if type(value) is not dict or not all(type(k) is str and type(v) in kinds
                                          for k, v in value.items()):
        raise SnapshotRefused(f"{key}: not an object of {' or '.join(_KIND[t] for t in kinds)}")
    return MappingProxyType(value)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def job_json(job: SlurmJob) -> dict[str, Any]:
    data = _plain(job)
    data["gpus_allocated"] = job.gpus_allocated
    data["gpus_requested"] = job.gpus_requested
    data["finished"] = job.is_finished
    if job.reason_text is not None:
        data["reason_text"] = job.reason_text
    return data


def node_json(node: SlurmNode) -> dict[str, Any]:
    data = _plain(node)
    data.update(gpus_total=node.gpus_total, gpus_alloc=node.gpus_alloc,
                gpus_idle=node.gpus_idle)
    return data


def encode_summary(snap: SlurmSnapshot) -> dict[str, Any]:
    """The ``/api/v1/slurm`` document: every field of the snapshot (:func:`decode_summary`
    decodes it back into a :class:`SlurmSnapshot`) plus the snapshot's derived counts (its
    properties: the one definition the control plane reads too)."""
    return {
        "collected_at": snap.collected_at,
        "interval_s": snap.interval_s,
        "duration_s": snap.duration_s,
        "up": snap.up,
        "errors": dict(snap.errors),
        "error_counts": dict(snap.error_counts),
        "command_durations": dict(snap.command_durations),
        "last_success": snap.last_success,
        "queue": dict(snap.queue),
        "pending_reasons": dict(snap.pending_reasons),
        "gpus": {"total": snap.gpus_total, "alloc": snap.gpus_alloc, "idle": snap.gpus_idle},
        "nodes": [node_json(n) for n in snap.nodes],
        "partitions": [_plain(p) for p in snap.partitions],
        "jobs": [job_json(j) for j in snap.jobs],
        "stats": _plain(snap.stats) if snap.stats else None,
        "accounting": {"available": snap.accounting, "finished_source": snap.finished_source,
                       "window_s": snap.accounting_window_s},
        "listed": sorted(snap.listed),
        "fairshare": dict(snap.fairshare),
    }


def decode_jobs(items: Any, key: str = "jobs") -> tuple[SlurmJob, ...]:
    """The jobs of a list of job documents (the controller daemon's ``/api/v1/slurm/jobs``),
    or :class:`SnapshotRefused` naming the first field at fault."""
    return _records(SlurmJob, _JOB, items, key)


def decode_nodes(items: Any, key: str = "nodes") -> tuple[SlurmNode, ...]:
    """The nodes of a list of node documents (the controller daemon's
    ``/api/v1/slurm/nodes``), or :class:`SnapshotRefused` naming the first field at fault."""
    return _records(SlurmNode, _NODE, items, key)


def decode_summary(doc: Any) -> SlurmSnapshot:
    """The :class:`SlurmSnapshot` a controller's ``/api/v1/slurm`` document holds, or
    :class:`SnapshotRefused`."""
    if type(doc) is not dict:
        raise SnapshotRefused("the Slurm summary is not an object")
    accounting = doc.get("accounting") or {}
    if type(accounting) is not dict:
        raise SnapshotRefused("accounting: not an object")
    head = _record(dict, {"collected_at": _NUM, "duration_s": _NUM, "up": _BOOL,
                          "last_success": _OPT_NUM, "interval_s": _OPT_NUM}, doc, "")
    acc = _record(dict, {"available": _BOOL, "window_s": _OPT_NUM}, accounting, "accounting")
    for key in ("collected_at", "duration_s", "up"):
        if key not in head:
            raise SnapshotRefused(f"{key}: missing")
    every = head.get("interval_s")
    if every is not None and not 0 < every <= 3600:  # NaN fails this too
        raise SnapshotRefused(f"interval_s: {every!r} is not a Slurm interval (0 to 3600 s)")
    listed = doc.get("listed", [])
    if type(listed) is not list or not all(type(v) is int for v in listed):
        raise SnapshotRefused("listed: not a list of job ids")
    stats = doc.get("stats")
    return SlurmSnapshot(
        collected_at=head["collected_at"], duration_s=head["duration_s"], up=head["up"],
        jobs=decode_jobs(doc.get("jobs", [])),
        nodes=_records(SlurmNode, _NODE, doc.get("nodes", []), "nodes"),
        partitions=_records(SlurmPartition, _PARTITION, doc.get("partitions", []),
                            "partitions"),
        stats=None if stats is None else _record(SchedulerStats, _STATS, stats, "stats"),
        errors=_map(doc, "errors", _STR),
        error_counts=_map(doc, "error_counts", _INT),
        command_durations=_map(doc, "command_durations", _NUM),
        last_success=head.get("last_success"),
        accounting=acc.get("available", False),
        accounting_window_s=acc.get("window_s"),
        listed=frozenset(listed),
        fairshare=_map(doc, "fairshare", _NUM),
        interval_s=head.get("interval_s"),
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = type(value).__name__
    return text if len(text) <= 60 else text[:56] + "..."
