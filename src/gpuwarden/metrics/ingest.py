"""Node snapshot (``/api/v1/snapshot`` JSON) -> samples for a metrics store.

Series are named and labelled as on the node's ``/metrics`` (dcgm-exporter's names), plus
the inventory's ``node`` label, so one selector means the same series on the embedded store
and on a Prometheus that scrapes the nodes with ``node`` as a target label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuwarden.metrics.model import Sample


class SnapshotError(ValueError):
    """The node answered something that is not a gpuwarden snapshot."""


def snapshot_samples(node: str, snapshot: Mapping[str, Any]) -> list[Sample]:
    """Every numeric GPU field of every GPU, plus ``gpuwarden_gpu_up`` and process counts.
    Raises :class:`SnapshotError` on a malformed document, so garbage is never stored."""
    try:
        ts = float(snapshot["timestamp"])
        hostname = str(snapshot["node"]["hostname"])
        gpus = snapshot["gpus"]
        if not isinstance(gpus, list):
            raise TypeError("gpus is not a list")
        out: list[Sample] = []
        for gpu in gpus:
            labels = {"node": node, "gpu": str(int(gpu["index"])), "UUID": str(gpu["uuid"]),
                      "Hostname": hostname}
            up = bool(gpu["up"])
            out.append(Sample("gpuwarden_gpu_up", labels, 1.0 if up else 0.0, ts))
            if not up:
                continue
            fields = gpu["fields"]
            if not isinstance(fields, Mapping):
                raise TypeError("fields is not an object")
            for name, value in fields.items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise TypeError(f"field {name} is not a number")
                if value != value or value in (float("inf"), float("-inf")):
                    continue  # NaN/inf never stored
                out.append(Sample(name, labels, float(value), ts))
            out.append(Sample("gpuwarden_gpu_processes", labels, float(len(gpu["processes"])),
                              ts))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"not a gpuwarden node snapshot: {exc!r}") from None
    return out
