"""The embedded metrics store: one SQLite file in WAL mode, one writer, any number of readers.

Layout (why: see ``bench/bench_store.py`` — row-per-sample SQLite costs ~10x the bytes):

* ``label_sets`` (each label set's labels, once) and ``metric_series`` (a series: its metric
  and label set); ``series`` is a view joining them (id, metric, labels JSON), the layout
  before format 1, which files of format 0 are converted from when opened.
* ``wal``: every :meth:`SqliteStore.append` batch as one compressed row, committed in one
  transaction with any new label set and series rows, so a batch is all there or not at all
  after a crash.  The same samples also go to the in-memory *head* (per-series arrays).
* ``chunks``: once the clock passes a chunk boundary (``chunk_seconds``, default 10 min),
  each series' head samples before it become one compressed row (deltas of deltas for
  times, exact scaled-integer deltas or raw doubles for values); ``wal`` rows wholly before
  the boundary are then deleted.  On open, ``wal`` is replayed into the head, skipping what
  a chunk already holds.  Raw chunks are kept ``raw_seconds`` (default 2 h).
* ``rollups``: per series and per ``rollup_block_seconds`` (default 1 h), min/max/sum/count/
  last of every minute, built from the chunks once a block is complete and kept
  ``retention_seconds`` (default 30 d).

Timestamps are kept in whole milliseconds, as in Prometheus.  Samples the store does not
keep (they are counted in :attr:`SqliteStore.dropped`): NaN and +-inf values, a timestamp
not after the series' newest one (duplicates, out of order), more than ``chunk_seconds``
behind or ahead of the store's clock.  A value that is not a number raises ``TypeError`` and
nothing of that batch is stored.

Threads and asyncio: every method is thread-safe.  :meth:`append` (and
:meth:`append_groups`, the scraper's columnar form of it) does the batch's CPU work and one
fsync, and now and then a slice of chunk/rollup maintenance (at most ``maintenance_budget``
series and about ``maintenance_seconds``, unless the store has fallen two chunk periods
behind); for a large fleet that is tens to hundreds of milliseconds, so an asyncio app calls
it through ``asyncio.to_thread``.  Reads use their own WAL connections and never wait for the
writer's disk work; they only take the in-memory lock long enough to copy the series they
read.

Every step of an append is linear in the batch (a node that sends 20,000 field names costs
20,000 dict lookups, never 20,000 x 20,000); :meth:`append` and :meth:`append_groups` are
one path (runs of samples become groups), and :meth:`SqliteStore.interrupt` abandons the
append in flight (nothing of that batch is stored), so a stop never waits on a huge batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from gpuwarden.gpu.series import SeriesGroup
from gpuwarden.metrics import codec
from gpuwarden.metrics.ingest import SampleGroup
from gpuwarden.metrics.model import AGGREGATIONS, Aggregation, Sample, Selector, Series
from gpuwarden.metrics.rollup import (
    MINUTE_MS,
    BucketColumns,
    DecodedRollups,
    Windows,
    aggregate_bucket_columns,
    aggregate_samples,
    bucketize,
    decode_buckets,
    rollup_blob,
)
from gpuwarden.metrics.series_index import NO_TIME, LabelSet, SeriesIndex

MAX_POINTS = 11_000  # what Prometheus allows per series in a range query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS label_sets (id INTEGER PRIMARY KEY, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metric_series (
  id INTEGER PRIMARY KEY, metric TEXT NOT NULL, label_set INTEGER NOT NULL);
CREATE VIEW IF NOT EXISTS series (id, metric, labels) AS
  SELECT m.id, m.metric, l.labels FROM metric_series AS m JOIN label_sets AS l
  ON l.id = m.label_set;
CREATE TABLE IF NOT EXISTS wal (
  id INTEGER PRIMARY KEY, max_ts INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
  series_id INTEGER NOT NULL, t_first INTEGER NOT NULL, t_last INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (series_id, t_first)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_t_last ON chunks (t_last);
CREATE TABLE IF NOT EXISTS rollups (
  series_id INTEGER NOT NULL, t_first INTEGER NOT NULL, t_last INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (series_id, t_first)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollups_t_last ON rollups (t_last);
"""

SCHEMA_VERSION = 1  # PRAGMA user_version; 0: one ``series`` row per series with its labels

# version 0 -> 1: labels stored once per label set (``label_sets``); ``series`` becomes a view
_MIGRATE_1 = """
CREATE TABLE label_sets (id INTEGER PRIMARY KEY, labels TEXT NOT NULL);
INSERT INTO label_sets (labels) SELECT labels FROM series GROUP BY labels ORDER BY min(id);
CREATE TABLE metric_series (
  id INTEGER PRIMARY KEY, metric TEXT NOT NULL, label_set INTEGER NOT NULL);
INSERT INTO metric_series SELECT s.id, s.metric, l.id FROM series AS s JOIN label_sets AS l
  ON l.labels = s.labels;
DROP TABLE series;
"""


class Interrupted(RuntimeError):
    """:meth:`SqliteStore.interrupt` abandoned this append; none of its batch is stored."""


class SqliteStore:
    """:class:`~gpuwarden.metrics.model.MetricsStore` in one SQLite file (see module doc)."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        raw_seconds: float = 2 * 3600,
        retention_seconds: float = 30 * 86400,
        chunk_seconds: int = 600,
        rollup_block_seconds: int = 3600,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        maintenance_budget: int = 20_000,
        maintenance_seconds: float = 0.25,
    ) -> None:
        if chunk_seconds < 60 or chunk_seconds % 60:
            raise ValueError("chunk_seconds must be a whole number of minutes (>= 60)")
        if rollup_block_seconds % chunk_seconds:
            raise ValueError("rollup_block_seconds must be a multiple of chunk_seconds")
        if retention_seconds < raw_seconds or raw_seconds <= 0:
            raise ValueError("need 0 < raw_seconds <= retention_seconds")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self._clock = clock
        self._raw_ms = round(raw_seconds * 1000)
        self._retention_ms = round(retention_seconds * 1000)
        self._chunk_ms = chunk_seconds * 1000
        self._block_ms = rollup_block_seconds * 1000
        self._budget = max(1, maintenance_budget)
        self._budget_seconds = maintenance_seconds
        self._lock = threading.Lock()  # the in-memory index (short holds)
        self._write_lock = threading.RLock()  # one writer at a time
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._index = SeriesIndex()
        self._decoded = DecodedRollups()
        self._flush_queue: list[int] = []
        self._flush_target = 0
        self._rollup_queue: list[int] = []
        self._interrupt = threading.Event()
        self._batch = 0  # appends so far (LabelSet.mark)
        self.dropped = 0
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._migrate()
        self._flushed_cut = self._meta("flushed_cut", self._now_ms() // self._chunk_ms
                                       * self._chunk_ms)
        self._rolled_until = self._meta(
            "rolled_until", (self._now_ms() - self._chunk_ms) // self._block_ms * self._block_ms)
        self._flush_target = self._flushed_cut
        # every sample at or after this is in the head (not in any chunk): a read of recent
        # samples needs no SQL.  A crash mid-flush leaves chunks past the flushed cut.
        newest_chunk = self._conn.execute("SELECT max(t_last) FROM chunks").fetchone()[0]
        self._head_from = max(self._flushed_cut,
                              -(1 << 62) if newest_chunk is None else newest_chunk + 1)
        self._load()

    # Writing ----------------------------------------------------------------------------------

    def append(self, samples: Sequence[Sample]) -> None:
        """Store one batch atomically and durably (committed before this returns).  Runs of
        samples that share a labels mapping and a timestamp become one group of
        :meth:`append_groups`, whose rules are those of the samples one at a time."""
        groups: list[SampleGroup] = []
        labels: object = None
        ts: object = None
        names: list[str] = []
        values: list[float] = []
        interrupted = self._interrupt.is_set
        for k, s in enumerate(samples):
            if not k & 4095 and interrupted():
                self._abandon()
            if s.labels is not labels or s.timestamp != ts:
                labels, ts, names, values = s.labels, s.timestamp, [], []
                groups.append(SampleGroup(labels, ts, names, values))
            names.append(s.metric)
            values.append(s.value)
        self.append_groups(groups)

    def append_groups(self, groups: Iterable[SeriesGroup]) -> None:
        """Store one batch of samples in columnar groups (one label set and timestamp each,
        as :func:`~gpuwarden.metrics.ingest.snapshot_groups` makes them) atomically and
        durably, by the rules of the module doc applied to its samples one at a time, in
        order.  A group newer than every sample of its label set, with finite values and
        the names of that label set's last such group (the steady state of a scrape), is
        taken whole: one dict lookup finds its :class:`LabelSet`, whose series ids and head
        buffers it reuses.  Any other goes sample by sample."""
        with self._write_lock:
            self._check_open()
            now = self._now_ms()
            lo, hi = now - self._chunk_ms, now + self._chunk_ms
            index = self._index
            aliases, label_set = index.aliases, index.label_set
            self._batch += 1
            batch = self._batch
            new_sets: list[LabelSet] = []
            new_series: list[tuple[int, str, LabelSet]] = []
            new_bufs: dict[int, tuple[array, array]] = {}
            touched: list[LabelSet] = []
            newest: dict[int, int] = {}  # per series, for groups checked sample by sample
            pushes: list = []  # head buffers, timestamp, values: three items per group
            sids, times, values = array("q"), array("q"), array("d")
            dropped = 0
            interrupted = self._interrupt.is_set
            last_timestamp: object = None
            ts = 0
            ts_rows: dict[int, array] = {}  # ts repeated n times, for the current ts
            try:
                for k, (labels, timestamp, names, vals) in enumerate(groups):
                    if (not k & 63 or len(names) > 512) and interrupted():
                        self._abandon()
                    if timestamp is not last_timestamp:  # a node's groups share one
                        last_timestamp = timestamp
                        ts = round(timestamp * 1000)
                        ts_rows = {}
                    if ts < lo or ts > hi:
                        dropped += len(names)
                        continue
                    ls = aliases.get((*labels, *labels.values()))  # items_key()
                    if ls is None:
                        ls = label_set(labels, new_sets)
                    if ls.mark != batch:
                        ls.mark = batch
                        ls.before = ls.newest
                        touched.append(ls)
                    if ts > ls.newest:
                        total = sum(vals)
                        if total - total == 0 and len(vals) == len(names) and (
                                ls.names == names
                                or self._cache(ls, names, new_series, new_bufs)):
                            ls.newest = ts
                            if ls.taken_sids is not None and ls.taken_sids is not ls.sids:
                                if ls.taken_more is None:
                                    ls.taken_more = []
                                ls.taken_more.append((ls.taken_sids, ls.taken_ts))
                            ls.taken_sids, ls.taken_ts = ls.sids, ts
                            sids.extend(ls.sids)
                            row = ts_rows.get(len(vals))
                            if row is None:
                                row = ts_rows[len(vals)] = array("q", (ts,)) * len(vals)
                            times.extend(row)
                            values.extend(vals)
                            pushes += ls.bufs, ts, vals
                            continue
                    # the general case: order, NaN and duplicates checked per sample
                    if ls.taken_sids is not None:  # groups of it taken whole in this batch
                        for taken_sids, taken_ts in (*(ls.taken_more or ()),
                                                     (ls.taken_sids, ls.taken_ts)):
                            for sid in taken_sids:
                                if newest.get(sid, NO_TIME) < taken_ts:
                                    newest[sid] = taken_ts
                        ls.taken_sids = ls.taken_more = None
                    kept_bufs: list[tuple[array, array]] = []
                    kept_vals: list[float] = []
                    metrics = ls.metrics
                    for n, v in zip(names, vals, strict=True):
                        if v - v != 0.0:  # NaN or +-inf (and TypeError if not a number)
                            dropped += 1
                            continue
                        sid = metrics.get(n)
                        if sid is None:
                            sid = self._new_series(ls, n, new_series)
                        prev = newest.get(sid)
                        if prev is None:
                            prev = index.newest_ts(sid)
                        if ts <= prev:
                            dropped += 1
                            continue
                        newest[sid] = ts
                        sids.append(sid)
                        kept_bufs.append(self._buffer(sid, new_bufs))
                        kept_vals.append(float(v))
                    if kept_vals:
                        times.extend(array("q", (ts,)) * len(kept_vals))
                        values.extend(kept_vals)
                        pushes += kept_bufs, ts, kept_vals
                        if ts > ls.newest:
                            ls.newest = ts
                if sids:
                    self._commit_batch(new_sets, new_series, new_bufs, sids, times, values,
                                       pushes)
            except BaseException:
                for ls in touched:  # nothing of the batch is stored
                    ls.newest = ls.before
                    ls.names = ls.taken_sids = ls.taken_more = None
                first_new = index.next_set_id
                for ls in new_sets:
                    ls.metrics.clear()
                for _sid, metric, ls in new_series:
                    if ls.id < first_new:
                        del ls.metrics[metric]
                index.drop_sets(new_sets)
                raise
            for ls in touched:
                ls.taken_sids = ls.taken_more = None
            index.drop_sets(new_sets)  # sets whose every sample was dropped
            self.dropped += dropped
            self._maintain_slice()

    def _new_series(self, ls: LabelSet, metric: str,
                    new_series: list[tuple[int, str, LabelSet]]) -> int:
        """A series id for a metric the label set does not have yet (registered for readers
        when the batch commits)."""
        sid = ls.metrics[metric] = self._index.next_id + len(new_series)
        new_series.append((sid, metric, ls))
        return sid

    def _buffer(self, sid: int, new_bufs: dict[int, tuple[array, array]],
                ) -> tuple[array, array]:
        """The head buffer of a series (a new one goes into the head when the batch
        commits)."""
        buf = self._index.head.get(sid) or new_bufs.get(sid)
        if buf is None:
            buf = new_bufs[sid] = (array("q"), array("d"))
        return buf

    def _cache(self, ls: LabelSet, names: Sequence[str],
               new_series: list[tuple[int, str, LabelSet]],
               new_bufs: dict[int, tuple[array, array]]) -> bool:
        """Make ``names`` the label set's cached group (series ids and head buffers); False
        when a name is there twice (such a group goes sample by sample)."""
        metrics = ls.metrics
        sids = [metrics.get(n) or self._new_series(ls, n, new_series) for n in names]
        if len(set(sids)) != len(sids):
            return False
        ls.names, ls.sids = names, tuple(sids)
        ls.bufs = tuple([self._buffer(sid, new_bufs) for sid in sids])
        return True

    def _commit_batch(self, new_sets: list[LabelSet],
                      new_series: list[tuple[int, str, LabelSet]],
                      new_bufs: dict[int, tuple[array, array]], sids: array, times: array,
                      values: array,
                      pushes: list,
                      ) -> None:
        """Write the batch durably, then, in one hold of the index lock, register its new
        series and push its samples into the head: a reader sees all of a batch or none of
        it, and never a series without its points."""
        set_rows = [(ls.id, json.dumps(ls.labels, separators=(",", ":")))
                    for ls in new_sets if ls.metrics]
        series_rows = [(sid, metric, ls.id) for sid, metric, ls in new_series]
        blob = codec.encode_batch(sids, times, values)
        if self._interrupt.is_set():
            self._abandon()
        try:
            with self._transaction() as c:
                c.executemany("INSERT INTO label_sets (id, labels) VALUES (?, ?)", set_rows)
                c.executemany("INSERT INTO metric_series (id, metric, label_set) "
                              "VALUES (?, ?, ?)", series_rows)
                c.execute("INSERT INTO wal (max_ts, data) VALUES (?, ?)", (max(times), blob))
        except sqlite3.OperationalError:
            if self._interrupt.is_set():  # interrupt() stopped the statement: rolled back
                self._abandon()
            raise
        with self._lock:
            index = self._index
            for sid, metric, ls in new_series:
                index.add(sid, metric, ls)
            index.head.update(new_bufs)
            it = iter(pushes)
            for bufs, ts, vals in zip(it, it, it, strict=True):
                for (buf_ts, buf_vs), v in zip(bufs, vals, strict=True):
                    buf_ts.append(ts)
                    buf_vs.append(v)

    def interrupt(self) -> None:
        """Abandon the append in flight in another thread (or the next one, if none is):
        it raises :class:`Interrupted` and stores none of its batch.  For a stop that
        cannot wait for a huge batch; the store stays usable."""
        self._interrupt.set()
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
            self._conn.interrupt()  # a statement running now fails; its transaction rolls back

    def _maintain_slice(self) -> None:
        """An append's slice of maintenance, skipped when a stop interrupts (the batch is
        stored by then; maintenance steps are transactions of their own)."""
        if self._interrupt.is_set():
            self._interrupt.clear()
            return
        try:
            self._maintain(self._budget)
        except sqlite3.OperationalError:
            if not self._interrupt.is_set():
                raise
            self._interrupt.clear()

    def _abandon(self) -> None:
        self._interrupt.clear()
        raise Interrupted("the append was interrupted; none of its batch is stored")

    def maintain(self) -> None:
        """Run all due maintenance now (chunk flush, rollups, retention); append() otherwise
        does it a slice at a time."""
        with self._write_lock:
            self._check_open()
            while self._maintain(None):
                pass

    def _maintain(self, budget: int | None) -> bool:
        """One step of due work; True while there is more."""
        if not self._flush_queue and not self._rollup_queue and not self._plan():
            return False
        if budget is not None and self._now_ms() - self._flush_target > 2 * self._chunk_ms:
            budget = None  # fallen a chunk period behind: catch up in one go
        deadline = None if budget is None else time.perf_counter() + self._budget_seconds
        if self._flush_queue:
            self._flush_some(budget, deadline)
        elif self._rollup_queue:
            self._rollup_some(budget, deadline)
        return True

    @staticmethod
    def _slice(queue: list[int], budget: int | None, deadline: float | None) -> Iterator[int]:
        """Up to ``budget`` series of ``queue``, until ``deadline`` (perf_counter) passes:
        a slice of maintenance never holds the writer (and the GIL) for long."""
        for k, sid in enumerate(queue[:budget] if budget else queue):
            if deadline is not None and k and not k % 64 and time.perf_counter() > deadline:
                return
            yield sid

    def _plan(self) -> bool:
        """Queue the next due job: a rollup block (so flushes cannot starve it), else a flush."""
        while self._rolled_until + self._block_ms + self._chunk_ms <= self._flushed_cut:
            start = self._rolled_until
            end = start + self._block_ms
            found = self._conn.execute(
                "SELECT DISTINCT series_id FROM chunks WHERE t_last >= ? AND t_first < ?",
                (start, end)).fetchall()
            if found:
                self._rollup_queue = sorted(r[0] for r in found)
                return True
            self._set_rolled_until(end)
        cut = self._now_ms() // self._chunk_ms * self._chunk_ms
        if cut > self._flushed_cut:
            self._flush_target = cut
            with self._lock:
                self._head_from = max(self._head_from, cut)
                self._flush_queue = sorted(
                    sid for sid, (ts, _) in self._index.head.items() if ts and ts[0] < cut)
            if not self._flush_queue:
                self._finish_flush()
            return True
        return False

    def _flush_some(self, budget: int | None, deadline: float | None = None) -> None:
        target = self._flush_target
        rows, cuts = [], {}
        head = self._index.head
        done = 0
        for sid in self._slice(self._flush_queue, budget, deadline):
            done += 1
            buf = head.get(sid)
            if buf is None:
                continue
            ts, vs = buf
            i = bisect_left(ts, target)
            if i:
                rows.append((sid, ts[0], ts[i - 1], codec.encode_raw(ts[:i], vs[:i])))
                cuts[sid] = i
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?)", rows)
        self._flush_queue = self._flush_queue[done:]
        with self._lock:
            latest = self._index.latest
            for sid, i in cuts.items():
                ts, vs = head[sid]
                latest[sid] = (ts[i - 1], vs[i - 1])  # the newest point once the head is empty
                del ts[:i]
                del vs[:i]
                if not ts:
                    self._index.drop_head(sid)
        if not self._flush_queue:
            self._finish_flush()

    def _finish_flush(self) -> None:
        target = self._flush_target
        now = self._now_ms()
        raw_cut = min(now - self._raw_ms, self._rolled_until)
        old = now - self._retention_ms
        with self._lock:
            index = self._index
            expired = [sid for sid, (ts, _) in index.latest.items()
                       if ts < old and sid not in index.head]
            gone = set(expired)
            emptied = {index.info[sid][1] for sid in expired}
            emptied = [(set_id,) for set_id in emptied
                       if gone.issuperset(index.by_id[set_id].metrics.values())]
        with self._transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('flushed_cut', ?)", (target,))
            c.execute("DELETE FROM wal WHERE max_ts < ?", (target,))
            c.execute("DELETE FROM chunks WHERE t_last < ?", (raw_cut,))
            c.execute("DELETE FROM rollups WHERE t_last < ?", (old,))
            c.executemany("DELETE FROM metric_series WHERE id = ?",
                          [(sid,) for sid in expired])
            c.executemany("DELETE FROM label_sets WHERE id = ?", emptied)
        self._flushed_cut = target
        with self._lock:
            for sid in expired:
                self._index.forget(sid)

    def _rollup_some(self, budget: int | None, deadline: float | None = None) -> None:
        start = self._rolled_until
        end = start + self._block_ms
        rows = []
        done = 0
        for sid in self._slice(self._rollup_queue, budget, deadline):
            done += 1
            ts_all: list[int] = []
            vs_all: list[float] = []
            for (blob,) in self._conn.execute(
                    "SELECT data FROM chunks WHERE series_id = ? AND t_first < ? AND t_last >= ?"
                    " ORDER BY t_first", (sid, end, start)):
                ts, vs = codec.decode_raw(blob)
                ts_all.extend(ts)
                vs_all.extend(vs)
            i, j = bisect_left(ts_all, start), bisect_left(ts_all, end)
            if i < j:
                rows.append((sid, start, end - 1, rollup_blob(ts_all[i:j], vs_all[i:j])))
        with self._transaction() as c:
            c.executemany("INSERT OR REPLACE INTO rollups VALUES (?, ?, ?, ?)", rows)
        self._rollup_queue = self._rollup_queue[done:]
        if not self._rollup_queue:
            self._set_rolled_until(end)

    def _set_rolled_until(self, value: int) -> None:
        with self._transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_until', ?)", (value,))
        self._rolled_until = value

    # Reading ----------------------------------------------------------------------------------

    def latest(self, selector: Selector, *, max_age: float | None = None,
               now: float | None = None) -> list[Series]:
        self._check_open()
        now_s = self._clock() if now is None else now
        with self._lock:
            index = self._index
            found = [(index.info[sid][0], index.labels(sid), index.newest(sid))
                     for sid in index.match(selector)]
        out = []
        for metric, labels, point in found:
            if point is None:
                continue
            ts = point[0] / 1000
            if max_age is not None and ts < now_s - max_age:
                continue
            out.append(Series(metric, dict(labels), [(ts, point[1])]))
        return out

    def series(self, selector: Selector) -> list[Mapping[str, str]]:
        self._check_open()
        with self._lock:
            index = self._index
            return [dict(index.labels(sid)) for sid in index.match(selector)]

    def range(self, selector: Selector, start: float, end: float, step: float,
              aggregation: Aggregation = "avg") -> list[Series]:
        """Raw samples serve the step windows that lie inside the raw window when ``step`` is
        under a minute; minute rollups serve the rest (one-minute resolution)."""
        self._check_open()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        windows = Windows(start, end, step)
        if windows.count > MAX_POINTS:
            raise ValueError(f"{windows.count} points per series is too many (at most "
                             f"{MAX_POINTS}); use a larger step or a shorter range")
        now_ms = self._now_ms()
        raw_floor = now_ms - self._raw_ms
        use_buckets = [windows.step >= MINUTE_MS or windows.point(k) - windows.step < raw_floor
                       for k in range(windows.count)]
        use_raw = [not b for b in use_buckets]
        with self._lock:
            # Recent windows need no SQL at all (a fleet's "last few minutes of every GPU"):
            # every sample at or after _head_from is in the head copied below (a flush only
            # cuts samples before its target, and the target is raised first, under this
            # lock), and no rollup row starts after the block being rolled up; raw chunks
            # that young outlive this read.
            skip = (self._head_from,
                    max(self._rolled_until + self._block_ms, raw_floor + self._chunk_ms))
            index = self._index
            wanted = []
            for sid in index.match(selector):
                buf = index.head.get(sid)
                head = (array("q", buf[0]), array("d", buf[1])) if buf else (array("q"),
                                                                              array("d"))
                wanted.append((sid, index.info[sid][0], index.labels(sid), head))
        out = []
        plan = self._plan_windows(windows, use_raw, use_buckets)
        with self._read() as conn:
            for sid, metric, labels, head in wanted:
                points = self._series_points(conn, sid, head, windows, use_raw, use_buckets,
                                             aggregation, skip, plan)
                if points:
                    out.append(Series(metric, dict(labels), points))
        return out

    def _series_points(self, conn: sqlite3.Connection, sid: int, head: tuple[array, array],
                       windows: Windows, use_raw: list[bool], use_buckets: list[bool],
                       aggregation: str, skip: tuple[int, int],
                       plan: tuple[int, int | None, tuple[int, int] | None],
                       ) -> list[tuple[float, float]]:
        """``skip``: (all samples from here on are in ``head``, no rollup row from here on);
        ``plan``: :meth:`_plan_windows` of the query."""
        last_point, raw_lo, bucket_span = plan
        buckets = BucketColumns()
        covered = None
        if bucket_span is not None:
            lo, hi = bucket_span
            covered = lo
            rows = () if lo >= skip[1] else conn.execute(
                "SELECT t_last, data FROM rollups WHERE series_id = ? AND t_first <= ? "
                "AND t_last >= ? ORDER BY t_first", (sid, hi, lo))
            for t_last, blob in rows:
                buckets.extend_blob(blob, self._decoded)
                covered = max(covered, t_last + 1)
        starts = [t for t in (raw_lo, covered) if t is not None]
        ts_all, vs_all = self._raw_samples(conn, sid, head, min(starts), last_point,
                                           min(starts) >= skip[0])
        values: dict[int, float] = {}
        if raw_lo is not None:
            values.update(aggregate_samples(ts_all, vs_all, windows, use_raw, aggregation))
        if bucket_span is not None and covered is not None:
            i = bisect_left(ts_all, covered)
            buckets.extend_buckets(bucketize(ts_all[i:], vs_all[i:]))
            values.update(aggregate_bucket_columns(buckets, windows, use_buckets, aggregation))
        return [(windows.point(k) / 1000, values[k]) for k in sorted(values)]

    @staticmethod
    def _plan_windows(windows: Windows, use_raw: list[bool], use_buckets: list[bool],
                      ) -> tuple[int, int | None, tuple[int, int] | None]:
        """What every series of one query reads: the last point, where raw windows start,
        the span of rollup minutes (computed once per query, not per series: a day at one
        minute is 1,440 windows, and a fleet query reads 8,000 series)."""
        raw_lo = min((windows.point(k) - windows.step for k, r in enumerate(use_raw) if r),
                     default=None)
        bucket_ks = [k for k, b in enumerate(use_buckets) if b]
        span = None
        if bucket_ks:
            span = ((windows.point(bucket_ks[0]) - windows.step) // MINUTE_MS * MINUTE_MS,
                    windows.point(bucket_ks[-1]))
        return windows.point(windows.count - 1), raw_lo, span

    @staticmethod
    def _raw_samples(conn: sqlite3.Connection, sid: int, head: tuple[array, array], lo: int,
                     hi: int, head_only: bool = False) -> tuple[list[int], list[float]]:
        head_ts, head_vs = head
        head_first = head_ts[0] if head_ts else 1 << 62
        ts_all: list[int] = []
        vs_all: list[float] = []
        rows = () if head_only else conn.execute(
            "SELECT data FROM chunks WHERE series_id = ? AND t_first <= ? AND t_last >= ? "
            "AND t_first < ? ORDER BY t_first", (sid, hi, lo, head_first))
        for (blob,) in rows:
            ts, vs = codec.decode_raw(blob)
            ts_all.extend(ts)
            vs_all.extend(vs)
        cut = bisect_left(ts_all, head_first)  # a chunk committed after the head was copied
        del ts_all[cut:], vs_all[cut:]
        ts_all.extend(head_ts)
        vs_all.extend(head_vs)
        i, j = bisect_left(ts_all, lo), bisect_left(ts_all, hi + 1)
        return ts_all[i:j], vs_all[i:j]

    # Lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections; the head stays in ``wal`` and is replayed on open."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._lock:
                readers, self._readers = self._readers, []
            for conn in readers:
                conn.close()
            self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals --------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the metrics store is closed")

    def _meta(self, key: str, default: int) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row[0])
        with self._transaction() as c:
            c.execute("INSERT INTO meta VALUES (?, ?)", (key, default))
        return default

    def _migrate(self) -> None:
        """Create the schema, converting a file of an older layout first; one transaction,
        so a crash midway leaves the old layout, converted again on the next open."""
        c = self._conn
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: metrics store format {version} is newer than this gpuwarden "
                f"reads ({SCHEMA_VERSION}); upgrade gpuwarden or move the file away")
        if version == SCHEMA_VERSION:
            return
        found = c.execute("SELECT type FROM sqlite_master WHERE name = 'series'").fetchone()
        steps = _MIGRATE_1 if found is not None and found[0] == "table" else ""
        try:  # one script (executescript commits any transaction open before it)
            c.executescript(f"BEGIN IMMEDIATE;{steps}{_SCHEMA}"
                            f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection, inside one read transaction (one snapshot)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _load(self) -> None:
        """Series, the newest point of each, and the head replayed from ``wal``."""
        index = self._index
        sets = {set_id: index.add_set(set_id, json.loads(labels)) for set_id, labels
                in self._conn.execute("SELECT id, labels FROM label_sets")}
        for sid, metric, set_id in self._conn.execute(
                "SELECT id, metric, label_set FROM metric_series"):
            index.add(sid, metric, sets[set_id])
        index.drop_sets(list(sets.values()))  # none without series, unless damaged
        for table in ("rollups", "chunks"):  # chunks last: they are newer
            for sid, blob in self._conn.execute(
                    f"SELECT series_id, data FROM {table} AS t WHERE t_first = "
                    f"(SELECT max(t_first) FROM {table} WHERE series_id = t.series_id)"):
                if table == "chunks":
                    ts, vs = codec.decode_raw(blob)
                    index.latest[sid] = (ts[-1], vs[-1])
                else:
                    last = decode_buckets(blob)[-1]
                    index.latest[sid] = ((last.minute + 1) * MINUTE_MS - 1, last.last)
        for (blob,) in self._conn.execute("SELECT data FROM wal ORDER BY id"):
            sids, times, values = codec.decode_batch(blob)
            for sid, ts, v in zip(sids, times, values, strict=True):
                if sid in index.info and ts > index.newest_ts(sid):
                    index.push(sid, ts, v)
        by_id = index.by_id
        for sid, (_, set_id) in index.info.items():
            ls = by_id[set_id]
            ls.newest = max(ls.newest, index.newest_ts(sid))
