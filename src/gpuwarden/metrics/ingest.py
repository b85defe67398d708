"""Node snapshot (``/api/v1/snapshot`` JSON) -> samples for a metrics store.

The series are those of the node's ``/metrics``, by the same function
(:func:`gpuwarden.gpu.series.node_series`): the same names, label keys and samples, plus the
inventory's ``node`` label, so one selector means the same series on the embedded store
and on a Prometheus that scrapes the nodes with ``node`` as a target label.  The Slurm
controller's ``slurm_*`` series come the same way from its Slurm snapshot
(:func:`slurm_groups`).

Two forms of the same samples: :func:`snapshot_groups` (columnar: a :class:`SampleGroup`
per label set, most of a GPU's readings in one; the form the scraper hands to a store that
has ``append_groups``; it makes no object per sample, which at 1,000 nodes is most of the
ingest cost) and :func:`snapshot_samples` (one :class:`~gpuwarden.metrics.model.Sample`
each, for any :class:`~gpuwarden.metrics.model.MetricsStore`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gpuwarden.gpu.series import JOB_INFO, SeriesGroup, node_series
from gpuwarden.gpu.wire import LIMITS, SnapshotRefused, validate_snapshot
from gpuwarden.metrics.model import Sample
from gpuwarden.slurm.metrics import slurm_series
from gpuwarden.slurm.model import SlurmSnapshot

__all__ = ["JOB_INFO", "SampleGroup", "SnapshotError", "groups_to_samples", "slurm_groups",
           "snapshot_groups", "snapshot_samples"]


class SnapshotError(ValueError):
    """The node answered something that is not a gpuwarden snapshot."""


class SampleGroup(SeriesGroup):
    """Samples of one timestamp and one label set: ``names[i]`` has value ``values[i]``.
    The labels mapping is shared by every sample of the group and must not be changed."""

    __slots__ = ()

    def samples(self) -> list[Sample]:
        return _samples(self)


def _samples(group: SeriesGroup) -> list[Sample]:
    labels, ts = group.labels, group.timestamp
    return [Sample(n, labels, float(v), ts)
            for n, v in zip(group.names, group.values, strict=True)]


def groups_to_samples(groups: Sequence[SeriesGroup]) -> list[Sample]:
    return [s for g in groups for s in _samples(g)]


def snapshot_groups(node: str, snapshot: Mapping[str, Any], *,
                    checked: bool = False) -> list[SeriesGroup]:
    """Every series of the node's ``/metrics`` (GPU fields, up, identity, clock events,
    XIDs, jobs, the collector's self-metrics), labelled ``node`` as well, at the snapshot's
    timestamp.  ``checked``: ``snapshot`` is what :func:`gpuwarden.gpu.wire.decode_snapshot`
    returned (the scraper's case), so nothing is checked again; otherwise it is checked
    here, by the same rules (with its own timestamp as the clock), and a document the
    scraper would refuse raises :class:`SnapshotError`, so garbage is never stored."""
    if not checked:
        ts = snapshot.get("timestamp") if isinstance(snapshot, Mapping) else None
        now = ts if type(ts) in (int, float) and math.isfinite(ts) else 0.0
        try:
            snapshot = validate_snapshot(snapshot, now, LIMITS)
        except SnapshotRefused as exc:
            raise SnapshotError(f"not a gpuwarden node snapshot: {exc.reason}") from None
    return _as_stored(node_series(snapshot, {"node": node}))


def slurm_groups(node: str, snapshot: SlurmSnapshot) -> list[SeriesGroup]:
    """The ``slurm_*`` series of the controller's ``/metrics`` at the cycle's time, labelled
    with the controller's ``node`` where the series has no ``node`` label of its own (as a
    Prometheus with ``honor_labels`` keeps them)."""
    return _as_stored(slurm_series(snapshot, {"node": node}))


def _as_stored(groups: list[SeriesGroup]) -> list[SeriesGroup]:
    """The groups with the labels Prometheus would store: one whose value is empty
    (``reason=""``, a job without a partition) is no label at all, and a selector's
    ``{reason=""}`` matches its absence on both stores."""
    for i, group in enumerate(groups):
        if "" in group.labels.values():
            groups[i] = group._replace(labels={k: v for k, v in group.labels.items() if v})
    return groups


def snapshot_samples(node: str, snapshot: Mapping[str, Any]) -> list[Sample]:
    """:func:`snapshot_groups` as one :class:`Sample` per value."""
    return groups_to_samples(snapshot_groups(node, snapshot))
