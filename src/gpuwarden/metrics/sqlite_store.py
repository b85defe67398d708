"""The embedded metrics store: one SQLite file in WAL mode, one writer, any number of readers.

Layout (why: see ``bench/bench_store.py`` — row-per-sample SQLite costs ~10x the bytes):

* ``wal``: every :meth:`SqliteStore.append` batch as one compressed row, committed in one
  transaction with any new ``series`` rows, so a batch is all there or not at all after a
  crash.  The same samples also go to the in-memory *head* (per-series arrays).
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
20,000 dict lookups, never 20,000 x 20,000), and :meth:`SqliteStore.interrupt` abandons the
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

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
from gpuwarden.metrics.series_index import NO_TIME, LabelKey, SeriesIndex

MAX_POINTS = 11_000  # what Prometheus allows per series in a range query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
  id INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL);
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
        self.dropped = 0
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.executescript(_SCHEMA)
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
        """Store one batch atomically and durably (committed before this returns)."""
        with self._write_lock:
            self._check_open()
            now = self._now_ms()
            lo, hi = now - self._chunk_ms, now + self._chunk_ms
            index = self._index
            label_keys: dict[int, LabelKey] = {}
            new: dict[tuple[str, LabelKey], int] = {}
            newest: dict[int, int] = {}
            group_newest: dict[LabelKey, int] = {}
            sids, times, values = array("q"), array("q"), array("d")
            next_id = index.next_id
            dropped = 0
            interrupted = self._interrupt.is_set
            for k, s in enumerate(samples):
                if not k & 4095 and interrupted():
                    self._abandon()
                v = s.value
                if v - v != 0.0:  # NaN or +-inf
                    dropped += 1
                    continue
                ts = round(s.timestamp * 1000)
                if ts < lo or ts > hi:
                    dropped += 1
                    continue
                labels = s.labels
                lk = label_keys.get(id(labels))
                if lk is None:
                    lk = label_keys[id(labels)] = tuple(sorted(labels.items()))
                key = (s.metric, lk)
                sid = index.sid(s.metric, lk) or new.get(key)
                if sid is None:
                    sid = new[key] = next_id
                    next_id += 1
                prev = newest.get(sid)
                if prev is None:
                    prev = index.newest_ts(sid)
                if ts <= prev:
                    dropped += 1
                    continue
                newest[sid] = ts
                if ts > group_newest.get(lk, NO_TIME):
                    group_newest[lk] = ts
                sids.append(sid)
                times.append(ts)
                values.append(float(v))
            self.dropped += dropped
            if sids:
                def push() -> None:
                    push_one = index.push
                    for sid, ts, v in zip(sids, times, values, strict=True):
                        push_one(sid, ts, v)

                self._commit_batch(new, sids, times, values, group_newest, push)
            self._maintain_slice()

    def append_groups(self, groups: Sequence[SampleGroup]) -> None:
        """:meth:`append` for samples in columnar groups (one label set and timestamp each,
        as :func:`~gpuwarden.metrics.ingest.snapshot_groups` makes them): the same rules and
        the same atomic, durable batch, without a Python object per sample.  A group whose
        timestamp is after every sample of its label set (the steady state of a scrape) is
        taken whole; any other goes sample by sample."""
        with self._write_lock:
            self._check_open()
            now = self._now_ms()
            lo, hi = now - self._chunk_ms, now + self._chunk_ms
            index = self._index
            by_labelkey = index.by_labelkey
            group_newest = index.group_newest
            new: dict[tuple[str, LabelKey], int] = {}
            batch_newest: dict[LabelKey, int] = {}  # label sets seen in this batch
            newest: dict[int, int] = {}  # the slow path's per-series order
            taken: dict[LabelKey, tuple[int, list[int]]] = {}  # groups taken whole: ts, sids
            taken_sets: dict[LabelKey, set[int]] = {}  # their sids as sets, when asked for
            sids, times, values = array("q"), array("q"), array("d")
            pushes: list[tuple[list[int], int, Sequence[float]]] = []
            dropped = 0
            interrupted = self._interrupt.is_set
            for labels, timestamp, names, vals in groups:
                if interrupted():
                    self._abandon()
                ts = round(timestamp * 1000)
                if ts < lo or ts > hi:
                    dropped += len(names)
                    continue
                lk = tuple(sorted(labels.items()))
                metrics = by_labelkey.get(lk)
                gsids: list[int] | None = None
                total = sum(vals)
                if lk not in batch_newest and ts > group_newest.get(lk, NO_TIME) \
                        and total - total == 0 and len(names) == len(vals):
                    if metrics is not None:
                        try:
                            gsids = [metrics[n] for n in names]
                        except KeyError:
                            gsids = None
                    if gsids is None:
                        gsids = []
                        for n in names:
                            sid = (metrics.get(n) if metrics is not None else None) \
                                or new.get((n, lk))
                            if sid is None:
                                sid = new[(n, lk)] = index.next_id + len(new)
                            gsids.append(sid)
                    if len(set(gsids)) != len(gsids):
                        gsids = None  # a name twice: sample by sample
                if gsids is not None:
                    vals = list(vals)
                    sids.extend(gsids)
                    times.extend(array("q", (ts,)) * len(gsids))
                    values.extend(vals)
                    pushes.append((gsids, ts, vals))
                    batch_newest[lk] = ts
                    taken[lk] = (ts, gsids)
                    continue
                # the general case: order, NaN and duplicates checked per sample
                kept_sids: list[int] = []
                kept_vals: list[float] = []
                whole = taken.get(lk)  # a group of this batch taken whole had this label set?
                whole_sids: set[int] = set()
                if whole is not None:
                    whole_sids = taken_sets.get(lk) or taken_sets.setdefault(lk, set(whole[1]))
                for n, v in zip(names, vals, strict=True):
                    v = float(v)
                    if v - v != 0.0:
                        dropped += 1
                        continue
                    sid = (metrics.get(n) if metrics is not None else None) or new.get((n, lk))
                    if sid is None:
                        sid = new[(n, lk)] = index.next_id + len(new)
                    prev = newest.get(sid)
                    if prev is None:
                        prev = index.newest_ts(sid)
                        if whole is not None and sid in whole_sids:
                            prev = max(prev, whole[0])
                    if ts <= prev:
                        dropped += 1
                        continue
                    newest[sid] = ts
                    kept_sids.append(sid)
                    kept_vals.append(v)
                if kept_sids:
                    sids.extend(kept_sids)
                    times.extend(array("q", (ts,)) * len(kept_sids))
                    values.extend(kept_vals)
                    pushes.append((kept_sids, ts, kept_vals))
                    if ts > batch_newest.get(lk, NO_TIME):
                        batch_newest[lk] = ts
            self.dropped += dropped
            if sids:
                def push() -> None:
                    head = index.head
                    for gsids, ts, vals in pushes:
                        for sid, v in zip(gsids, vals, strict=True):
                            buf = head.get(sid)
                            if buf is None:
                                buf = head[sid] = (array("q"), array("d"))
                            buf[0].append(ts)
                            buf[1].append(v)

                self._commit_batch(new, sids, times, values, batch_newest, push)
            self._maintain_slice()

    def _commit_batch(self, new: Mapping[tuple[str, LabelKey], int], sids: array,
                      times: array, values: array, group_newest: Mapping[LabelKey, int],
                      push: Callable[[], None]) -> None:
        """Write the batch durably, then, in one hold of the index lock, register its new
        series and ``push`` its samples into the head: a reader sees all of a batch or
        none of it, and never a series without its points."""
        rows = [(sid, metric, json.dumps(dict(lk), separators=(",", ":")))
                for (metric, lk), sid in new.items()]
        blob = codec.encode_batch(sids, times, values)
        if self._interrupt.is_set():
            self._abandon()
        try:
            with self._transaction() as c:
                c.executemany("INSERT INTO series (id, metric, labels) VALUES (?, ?, ?)", rows)
                c.execute("INSERT INTO wal (max_ts, data) VALUES (?, ?)", (max(times), blob))
        except sqlite3.OperationalError:
            if self._interrupt.is_set():  # interrupt() stopped the statement: rolled back
                self._abandon()
            raise
        with self._lock:
            index = self._index
            for (metric, lk), sid in new.items():
                index.add(sid, metric, index.labels_of.get(lk) or dict(lk), lk)
            newest = index.group_newest
            for lk, ts in group_newest.items():
                if ts > newest.get(lk, NO_TIME):
                    newest[lk] = ts
            push()

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
                    del head[sid]
        if not self._flush_queue:
            self._finish_flush()

    def _finish_flush(self) -> None:
        target = self._flush_target
        now = self._now_ms()
        raw_cut = min(now - self._raw_ms, self._rolled_until)
        old = now - self._retention_ms
        with self._lock:
            expired = [sid for sid, (ts, _) in self._index.latest.items()
                       if ts < old and sid not in self._index.head]
        with self._transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('flushed_cut', ?)", (target,))
            c.execute("DELETE FROM wal WHERE max_ts < ?", (target,))
            c.execute("DELETE FROM chunks WHERE t_last < ?", (raw_cut,))
            c.execute("DELETE FROM rollups WHERE t_last < ?", (old,))
            c.executemany("DELETE FROM series WHERE id = ?", [(sid,) for sid in expired])
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
        for sid, metric, labels in self._conn.execute("SELECT id, metric, labels FROM series"):
            index.add(sid, metric, json.loads(labels))
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
        newest = index.group_newest
        for sid, (_, key) in index.info.items():
            ts = index.newest_ts(sid)
            if ts > newest.get(key, NO_TIME):
                newest[key] = ts
