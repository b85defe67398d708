"""Node snapshot (``/api/v1/snapshot`` JSON) -> samples for a metrics store.

Series are named and labelled as on the node's ``/metrics`` (dcgm-exporter's names), plus
the inventory's ``node`` label, so one selector means the same series on the embedded store
and on a Prometheus that scrapes the nodes with ``node`` as a target label.

Two forms of the same samples: :func:`snapshot_groups` (columnar: one :class:`SampleGroup`
per GPU, the form the scraper hands to a store that has ``append_groups``; it makes no
object per sample, which at 1,000 nodes is most of the ingest cost) and
:func:`snapshot_samples` (one :class:`~gpuwarden.metrics.model.Sample` each, for any
:class:`~gpuwarden.metrics.model.MetricsStore`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from gpuwarden.metrics.model import Sample

_NUMBER = (int, float)
JOB_INFO = "gpuwarden_gpu_job_info"  # as the node's /metrics names it


class SnapshotError(ValueError):
    """The node answered something that is not a gpuwarden snapshot."""


class SampleGroup(NamedTuple):
    """Samples of one timestamp and one label set: ``names[i]`` has value ``values[i]``.
    The labels mapping is shared by every sample of the group and must not be changed."""

    labels: Mapping[str, str]
    timestamp: float  # unix seconds
    names: Sequence[str]
    values: Sequence[float]

    def samples(self) -> list[Sample]:
        labels, ts = self.labels, self.timestamp
        return [Sample(n, labels, float(v), ts)
                for n, v in zip(self.names, self.values, strict=True)]


def groups_to_samples(groups: Sequence[SampleGroup]) -> list[Sample]:
    return [s for g in groups for s in g.samples()]


def _finite_numbers(name_of: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    """Names and values of a GPU's fields; NaN/inf dropped; a value that is not a number
    (bool included) raises TypeError."""
    names = list(name_of)
    values = list(name_of.values())
    if not set(map(type, values)) <= {float, int}:  # the usual case costs two C loops
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, _NUMBER) or isinstance(value, bool):
                raise TypeError(f"field {name} is not a number")
    total = sum(values)
    if total - total != 0:  # some value is NaN or +-inf (or the sum overflowed): filter
        keep = [i for i, v in enumerate(values) if math.isfinite(v)]
        names = [names[i] for i in keep]
        values = [values[i] for i in keep]
    return names, values


def snapshot_groups(node: str, snapshot: Mapping[str, Any], *,
                    checked: bool = False) -> list[SampleGroup]:
    """Every numeric GPU field of every GPU, plus ``gpuwarden_gpu_up`` and process counts,
    one group per GPU, and ``gpuwarden_gpu_job_info{job_id,user,partition}`` per job holding
    a GPU.  ``checked``: ``snapshot`` is what :func:`gpuwarden.gpu.wire.decode_snapshot`
    returned (the scraper's case), so nothing is checked again; otherwise a malformed
    document raises :class:`SnapshotError` and NaN/inf values are left out, so garbage is
    never stored."""
    if checked:
        return _groups(node, snapshot, _clean_numbers)
    try:
        ts = float(snapshot["timestamp"])
        if not math.isfinite(ts):
            raise ValueError("timestamp is not finite")
        gpus = snapshot["gpus"]
        if not isinstance(gpus, list):
            raise TypeError("gpus is not a list")
        return _groups(node, snapshot, _finite_numbers)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"not a gpuwarden node snapshot: {exc!r}") from None


def _clean_numbers(fields: Mapping[str, float]) -> tuple[list[str], list[float]]:
    return list(fields), list(fields.values())


def _groups(node: str, snapshot: Mapping[str, Any],
            numbers: Callable[[Mapping[str, Any]], tuple[list[str], list[float]]],
            ) -> list[SampleGroup]:
    ts = float(snapshot["timestamp"])
    hostname = str(snapshot["node"]["hostname"])
    out: list[SampleGroup] = []
    for gpu in snapshot["gpus"]:
        labels = {"node": node, "gpu": str(int(gpu["index"])), "UUID": str(gpu["uuid"]),
                  "Hostname": hostname}
        for job in gpu.get("jobs") or ():  # which job holds the GPU: an info series
            out.append(SampleGroup(
                {**labels, "job_id": str(job["job_id"]), "user": str(job.get("user", "")),
                 "partition": str(job.get("partition", ""))}, ts, [JOB_INFO], [1.0]))
        if not bool(gpu["up"]):
            out.append(SampleGroup(labels, ts, ["gpuwarden_gpu_up"], [0.0]))
            continue
        fields = gpu["fields"]
        if not isinstance(fields, Mapping):
            raise TypeError("fields is not an object")
        names, values = numbers(fields)
        names.insert(0, "gpuwarden_gpu_up")
        values.insert(0, 1.0)
        names.append("gpuwarden_gpu_processes")
        values.append(float(len(gpu["processes"])))
        out.append(SampleGroup(labels, ts, names, values))
    return out


def snapshot_samples(node: str, snapshot: Mapping[str, Any]) -> list[Sample]:
    """:func:`snapshot_groups` as one :class:`Sample` per value (same samples, same order as
    before the columnar form existed: up, the fields, process count, GPU by GPU)."""
    return groups_to_samples(snapshot_groups(node, snapshot))
