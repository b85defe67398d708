"""The embedded store's in-memory view: series registry, the head (samples not yet in a
chunk) and the newest point of each series.

Only the store's writer mutates it, under the store's lock; readers copy what they need
under the same lock, briefly.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuwarden.metrics.model import Selector

LabelKey = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class SeriesInfo:
    metric: str
    labels: dict[str, str]


@dataclass(slots=True)
class SeriesIndex:
    ids: dict[tuple[str, LabelKey], int] = field(default_factory=dict)
    info: dict[int, SeriesInfo] = field(default_factory=dict)
    by_metric: dict[str, set[int]] = field(default_factory=dict)
    # head: series id -> (times in ms, values), time-ordered, not yet in a chunk
    head: dict[int, tuple[array, array]] = field(default_factory=dict)
    latest: dict[int, tuple[int, float]] = field(default_factory=dict)
    next_id: int = 1

    def add(self, sid: int, metric: str, labels: Mapping[str, str]) -> None:
        key = (metric, tuple(sorted(labels.items())))
        self.ids[key] = sid
        self.info[sid] = SeriesInfo(metric, dict(labels))
        self.by_metric.setdefault(metric, set()).add(sid)
        self.next_id = max(self.next_id, sid + 1)

    def forget(self, sid: int) -> None:
        info = self.info.pop(sid)
        self.ids.pop((info.metric, tuple(sorted(info.labels.items()))), None)
        ids = self.by_metric.get(info.metric)
        if ids is not None:
            ids.discard(sid)
            if not ids:
                del self.by_metric[info.metric]
        self.head.pop(sid, None)
        self.latest.pop(sid, None)

    def match(self, selector: Selector) -> list[int]:
        out = []
        for sid in self.by_metric.get(selector.metric, ()):
            labels = self.info[sid].labels
            if all(m.matches(labels) for m in selector.matchers):
                out.append(sid)
        return sorted(out)

    def push(self, sid: int, ts_ms: int, value: float) -> None:
        buf = self.head.get(sid)
        if buf is None:
            buf = self.head[sid] = (array("q"), array("d"))
        buf[0].append(ts_ms)
        buf[1].append(value)
        self.latest[sid] = (ts_ms, value)
