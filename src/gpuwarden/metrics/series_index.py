"""The embedded store's in-memory view: series registry, the head (samples not yet in a
chunk) and the newest point of each series.

Only the store's writer mutates it, under the store's lock; readers copy what they need
under the same lock, briefly.

Lookups are built for a fleet (1,000 nodes x 8 GPUs x ~40 fields: ~340,000 series):

* :class:`LabelSet`: one record per label set (its labels once, its series by metric, the
  newest timestamp of any of them, and the series ids and head buffers of the last group
  taken whole), found from a group's label dict by one lookup of its items as given
  (``aliases``): a scrape's group of a known label set costs one dict lookup and one
  comparison of its names, not a sort of its labels.  Its labels are stored once too (the
  ``label_sets`` table).
* ``by_label``: (label, value) -> series ids, so a selector with equality matchers
  (``{node="n1",gpu="3"}``) reads the few series it names instead of testing every series
  of its metric.
* a series is (metric, label set id): a tuple the garbage collector stops tracking, so
  ~340,000 series do not make every full collection scan them.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuwarden.metrics.model import Selector

NO_TIME = -1 << 62
_MAX_ALIASES = 4  # item orders remembered per label set (a sorted key is computed past them)


@dataclass(slots=True, eq=False)
class LabelSet:
    """One label set: its labels (once, shared by its series), its series by metric, and
    what ingest needs to take a group of samples of it in one step.  Only the writer
    touches ``metrics``, ``newest`` and the cache; readers reach ``labels`` by ``id``."""

    id: int  # its row in ``label_sets``
    labels: dict[str, str]  # sorted by name; shared by its series: copy before handing out
    metrics: dict[str, int] = field(default_factory=dict)  # metric -> series id
    # an upper bound of the newest timestamp of any of its series: a group of samples
    # newer than it needs no per-series order check
    newest: int = NO_TIME
    # its keys in SeriesIndex.aliases: items_key() of ``labels`` (its identity), then of the
    # other orders its producers build its labels in
    aliases: tuple[tuple[str, ...], ...] = ()
    # the names of the last group taken whole, with their series ids and head buffers: the
    # next scrape's group has the same names, so it costs one list comparison
    names: object = None
    # (tuples of untracked objects: the garbage collector stops scanning them)
    sids: tuple[int, ...] = ()
    bufs: tuple[tuple[array, array], ...] = ()
    # ingest's bookkeeping during one batch (its ``mark``), kept here so that a batch makes
    # no object per group that outlives the group (which would feed the garbage collector):
    # its newest before the batch (to roll back), and the series ids and timestamp of its
    # latest group taken whole (older ones, with other ids, in ``taken_more``), for a later
    # group of the batch that goes sample by sample
    mark: int = 0
    before: int = NO_TIME
    taken_sids: tuple[int, ...] | None = None
    taken_ts: int = NO_TIME
    taken_more: list[tuple[tuple[int, ...], int]] | None = None


@dataclass(slots=True)
class SeriesIndex:
    info: dict[int, tuple[str, int]] = field(default_factory=dict)  # metric, label set id
    by_metric: dict[str, set[int]] = field(default_factory=dict)
    by_label: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    # items_key() of a label dict, sorted by name or in the order a producer builds it ->
    # its set (writer only): one dict lookup per group finds its label set, no sort (a flat
    # tuple of names and values stands for exactly one label dict, in whatever order)
    aliases: dict[tuple[str, ...], LabelSet] = field(default_factory=dict)
    by_id: dict[int, LabelSet] = field(default_factory=dict)  # sets with series
    # head: series id -> (times in ms, values), time-ordered, not yet in a chunk
    head: dict[int, tuple[array, array]] = field(default_factory=dict)
    # the newest point of a series with no head (the newest of one with a head is the head's
    # last sample): see newest()
    latest: dict[int, tuple[int, float]] = field(default_factory=dict)
    next_id: int = 1
    next_set_id: int = 1

    def label_set(self, labels: Mapping[str, str], new: list[LabelSet]) -> LabelSet:
        """The set of ``labels``, by one lookup of their items in the order given; a set
        not known yet is made (with the next free id) and appended to ``new``: it has no
        series (and readers do not see it) until :meth:`add` gives it one."""
        items = items_key(labels)
        found = self.aliases.get(items)
        if found is not None:
            return found
        ordered = dict(sorted(labels.items()))
        found = self.aliases.get(items_key(ordered))
        if found is None:
            found = self._register(self.next_set_id + len(new), ordered)
            new.append(found)
        if len(found.aliases) < _MAX_ALIASES and items not in self.aliases:
            found.aliases += (items,)
            self.aliases[items] = found
        return found

    def drop_sets(self, sets: list[LabelSet]) -> None:
        """Forget sets made by :meth:`label_set` that got no series (a batch abandoned)."""
        for ls in sets:
            if not ls.metrics:
                self._unregister(ls)

    def add_set(self, set_id: int, labels: Mapping[str, str]) -> LabelSet:
        """Register a stored label set (loading the store)."""
        ls = self.by_id[set_id] = self._register(set_id, dict(sorted(labels.items())))
        if set_id >= self.next_set_id:
            self.next_set_id = set_id + 1
        return ls

    def _register(self, set_id: int, ordered: dict[str, str]) -> LabelSet:
        ls = LabelSet(set_id, ordered)
        key = items_key(ordered)
        ls.aliases = (key,)
        self.aliases[key] = ls
        return ls

    def add(self, sid: int, metric: str, ls: LabelSet) -> None:
        ls.metrics[metric] = sid
        self.by_id[ls.id] = ls
        self.info[sid] = (metric, ls.id)
        self.by_metric.setdefault(metric, set()).add(sid)
        for pair in ls.labels.items():
            self.by_label.setdefault(pair, set()).add(sid)
        if sid >= self.next_id:
            self.next_id = sid + 1
        if ls.id >= self.next_set_id:
            self.next_set_id = ls.id + 1

    def forget(self, sid: int) -> int | None:
        """Drop a series; the id of its label set when that set has no series left."""
        metric, set_id = self.info.pop(sid)
        ls = self.by_id[set_id]
        if ls.metrics.get(metric) == sid:
            del ls.metrics[metric]
        ls.names = None
        _discard(self.by_metric, metric, sid)
        for pair in ls.labels.items():
            _discard(self.by_label, pair, sid)
        self.head.pop(sid, None)
        self.latest.pop(sid, None)
        if ls.metrics:
            return None
        self._unregister(ls)
        return set_id

    def _unregister(self, ls: LabelSet) -> None:
        self.by_id.pop(ls.id, None)
        for items in ls.aliases:
            self.aliases.pop(items, None)

    def drop_head(self, sid: int) -> None:
        """Drop an emptied head buffer (a series with nothing since the last chunk)."""
        del self.head[sid]
        self.by_id[self.info[sid][1]].names = None  # its cached buffers are stale

    def labels(self, sid: int) -> dict[str, str]:
        """The series' labels: a dict shared with its label set's other series (copy it
        before handing it out)."""
        return self.by_id[self.info[sid][1]].labels

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
        info, by_id = self.info, self.by_id
        out = []
        for sid in smallest:
            if all(sid in s for s in others):
                labels = by_id[info[sid][1]].labels
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


def items_key(labels: Mapping[str, str]) -> tuple[str, ...]:
    """A label dict's names then values, in its own order: what ``SeriesIndex.aliases`` is
    keyed by (one flat tuple of strings, whose hashes are cached: no pair tuples)."""
    return (*labels, *labels.values())


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
