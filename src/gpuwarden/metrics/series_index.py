"""The embedded store's in-memory view: series registry, the head (samples not yet in a
chunk) and the newest point of each series.

Only the store's writer mutates it, under the store's lock; readers copy what they need
under the same lock, briefly.

Lookups are built for a fleet (1,000 nodes x 8 GPUs x ~40 fields: ~340,000 series):

* ``by_labelkey``: label set -> metric -> series id.  The series of one GPU share one label
  set, so ingest resolves a label set once per GPU and then a name per value.
* ``by_label``: (label, value) -> series ids, so a selector with equality matchers
  (``{node="n1",gpu="3"}``) reads the few series it names instead of testing every series
  of its metric.
* label dicts are shared by the series of one label set (one dict per GPU, not per series),
  and a series is (metric, label key): tuples of strings, which the garbage collector stops
  tracking, so ~340,000 series do not make every full collection scan them.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuwarden.metrics.model import Selector

LabelKey = tuple[tuple[str, str], ...]
NO_TIME = -1 << 62


@dataclass(slots=True)
class SeriesIndex:
    info: dict[int, tuple[str, LabelKey]] = field(default_factory=dict)  # metric, label key
    by_metric: dict[str, set[int]] = field(default_factory=dict)
    by_label: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    by_labelkey: dict[LabelKey, dict[str, int]] = field(default_factory=dict)
    labels_of: dict[LabelKey, dict[str, str]] = field(default_factory=dict)
    # an upper bound of the newest timestamp of any series of a label set: a group of
    # samples newer than it needs no per-series order check
    group_newest: dict[LabelKey, int] = field(default_factory=dict)
    # head: series id -> (times in ms, values), time-ordered, not yet in a chunk
    head: dict[int, tuple[array, array]] = field(default_factory=dict)
    # the newest point of a series with no head (the newest of one with a head is the head's
    # last sample): see newest()
    latest: dict[int, tuple[int, float]] = field(default_factory=dict)
    next_id: int = 1

    def add(self, sid: int, metric: str, labels: Mapping[str, str],
            key: LabelKey | None = None) -> None:
        key = tuple(sorted(labels.items())) if key is None else key
        shared = self.labels_of.get(key)
        if shared is None:
            shared = self.labels_of[key] = dict(key)
        self.by_labelkey.setdefault(key, {})[metric] = sid
        self.info[sid] = (metric, key)
        self.by_metric.setdefault(metric, set()).add(sid)
        for pair in key:
            self.by_label.setdefault(pair, set()).add(sid)
        if sid >= self.next_id:
            self.next_id = sid + 1

    def forget(self, sid: int) -> None:
        metric, key = self.info.pop(sid)
        metrics = self.by_labelkey.get(key)
        if metrics is not None and metrics.get(metric) == sid:
            del metrics[metric]
            if not metrics:
                del self.by_labelkey[key]
                self.labels_of.pop(key, None)
                self.group_newest.pop(key, None)
        _discard(self.by_metric, metric, sid)
        for pair in key:
            _discard(self.by_label, pair, sid)
        self.head.pop(sid, None)
        self.latest.pop(sid, None)

    def labels(self, sid: int) -> dict[str, str]:
        """The series' labels: a dict shared with its label set's other series (copy it
        before handing it out)."""
        return self.labels_of[self.info[sid][1]]

    def sid(self, metric: str, key: LabelKey) -> int | None:
        metrics = self.by_labelkey.get(key)
        return None if metrics is None else metrics.get(metric)

    def newest(self, sid: int) -> tuple[int, float] | None:
        buf = self.head.get(sid)
        if buf is not None and buf[0]:
            return buf[0][-1], buf[1][-1]
        return self.latest.get(sid)

    def newest_ts(self, sid: int) -> int:
        buf = self.head.get(sid)
        if buf is not None and buf[0]:
            return buf[0][-1]
        point = self.latest.get(sid)
        return NO_TIME if point is None else point[0]

    def match(self, selector: Selector) -> list[int]:
        candidates = self.by_metric.get(selector.metric)
        if not candidates:
            return []
        narrowing = [candidates]
        for m in selector.matchers:
            if m.op == "=" and m.value:
                ids = self.by_label.get((m.label, m.value))
                if not ids:
                    return []
                narrowing.append(ids)
            elif m.op == "=~" and (words := _literals(m.value)) is not None:
                # node=~"a|b|c" (how services ask for a few nodes): the union of the label's
                # sets, not one regex match per series of the metric
                union: set[int] = set()
                for word in words:
                    union |= self.by_label.get((m.label, word), set())
                if not union:
                    return []
                narrowing.append(union)
        narrowing.sort(key=len)
        smallest, others = narrowing[0], narrowing[1:]
        info, labels_of = self.info, self.labels_of
        out = []
        for sid in smallest:
            if all(sid in s for s in others):
                labels = labels_of[info[sid][1]]
                if all(m.matches(labels) for m in selector.matchers):
                    out.append(sid)
        out.sort()
        return out

    def push(self, sid: int, ts_ms: int, value: float) -> None:
        buf = self.head.get(sid)
        if buf is None:
            buf = self.head[sid] = (array("q"), array("d"))
        buf[0].append(ts_ms)
        buf[1].append(value)


_META = set(".^$*+?{}[]\\|()")


def _literals(pattern: str) -> list[str] | None:
    """The words of a regex that is only an alternation of non-empty literals (``a|b\\.c``),
    else None."""
    words = []
    for piece in re.split(r"(?<!\\)\|", pattern):
        plain = re.sub(r"\\[^A-Za-z0-9]", "", piece)  # \d, \w... are classes, not literals
        if not piece or any(c in _META for c in plain):
            return None
        words.append(re.sub(r"\\([^A-Za-z0-9])", r"\1", piece))
    return words


def _discard(index: dict, key: object, sid: int) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(sid)
        if not ids:
            del index[key]
