"""Per-minute rollups and step-window aggregation (pure functions over integer-ms times).

A query point at ``t`` aggregates the samples in ``(t - step, t]``, as ``*_over_time(x[step])``
does in PromQL.  From rollups a point aggregates the minutes that *start* in
``[t - step, t)``: the same thing at one-minute resolution.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import islice, repeat
from operator import add, floordiv, lt

from gpuwarden.metrics.codec import ROLLUP_CHUNK, decode_columns, encode_columns

MINUTE_MS = 60_000


@dataclass(slots=True)
class Bucket:
    minute: int  # minutes since the epoch
    min: float
    max: float
    sum: float
    count: int
    last: float

    def merge(self, later: Bucket) -> None:
        """Fold in a bucket for the same minute holding later samples."""
        self.min = min(self.min, later.min)
        self.max = max(self.max, later.max)
        self.sum += later.sum
        self.count += later.count
        self.last = later.last


def bucketize(ts_ms: Sequence[int], values: Sequence[float]) -> list[Bucket]:
    """Minute buckets of time-ordered samples."""
    out: list[Bucket] = []
    current: Bucket | None = None
    for ts, v in zip(ts_ms, values, strict=True):
        minute = ts // MINUTE_MS
        if current is None or minute != current.minute:
            current = Bucket(minute, v, v, v, 1, v)
            out.append(current)
        else:
            if v < current.min:
                current.min = v
            if v > current.max:
                current.max = v
            current.sum += v
            current.count += 1
            current.last = v
    return out


def rollup_blob(ts_ms: Sequence[int], values: Sequence[float]) -> bytes | None:
    """``encode_buckets(bucketize(ts_ms, values))`` without a Bucket per minute (a rollup of
    a big fleet covers ~340,000 series an hour); None when there are no samples."""
    n = len(ts_ms)
    if not n:
        return None
    minutes = list(map(floordiv, ts_ms, repeat(MINUTE_MS)))
    values = list(values)
    firsts, mins, maxs, sums, counts, lasts = [], [], [], [], [], []
    i = 0
    while i < n:
        minute = minutes[i]
        j = bisect_right(minutes, minute, i)
        part = values[i:j]
        firsts.append(minute)
        mins.append(min(part))
        maxs.append(max(part))
        sums.append(sum(part[1:], part[0]))  # in order, from the first: as Bucket folds
        counts.append(float(j - i))
        lasts.append(part[-1])
        i = j
    return encode_columns(ROLLUP_CHUNK, firsts, [mins, maxs, sums, counts, lasts])


def encode_buckets(buckets: Sequence[Bucket]) -> bytes:
    return encode_columns(
        ROLLUP_CHUNK, [b.minute for b in buckets],
        [[b.min for b in buckets], [b.max for b in buckets], [b.sum for b in buckets],
         [float(b.count) for b in buckets], [b.last for b in buckets]])


def decode_buckets(blob: bytes) -> list[Bucket]:
    minutes, (mins, maxs, sums, counts, lasts) = decode_columns(blob, ROLLUP_CHUNK, 5)
    return [Bucket(m, lo, hi, s, int(c), la)
            for m, lo, hi, s, c, la in zip(minutes, mins, maxs, sums, counts, lasts, strict=True)]


class DecodedRollups:
    """Decoded rollup rows, most recently used first, keyed by the stored bytes themselves
    (so an entry can never be stale): a dashboard re-reads the same GPU's day every few
    seconds, and decoding is most of a 24 h history read.  Thread-safe."""

    def __init__(self, entries: int = 4096) -> None:
        self.entries = entries  # ~3 kB each (an hour of minutes, 6 columns)
        self._data: OrderedDict[bytes, tuple[array, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blob: bytes) -> tuple[array, ...] | None:
        with self._lock:
            found = self._data.get(blob)
            if found is not None:
                self._data.move_to_end(blob)
            return found

    def put(self, blob: bytes, columns: tuple[array, ...]) -> None:
        with self._lock:
            self._data[blob] = columns
            while len(self._data) > self.entries:
                self._data.popitem(last=False)


class BucketColumns:
    """Buckets as columns (minute, min, max, sum, count, last), time-ordered: what a query
    reads, with no object per minute (a day of one series is 1,440 of them)."""

    __slots__ = ("counts", "lasts", "maxs", "mins", "minutes", "sums")

    def __init__(self) -> None:
        self.minutes: list[int] = []
        self.mins: list[float] = []
        self.maxs: list[float] = []
        self.sums: list[float] = []
        self.counts: list[float] = []
        self.lasts: list[float] = []

    def extend_blob(self, blob: bytes, cache: DecodedRollups | None = None) -> None:
        columns = cache.get(blob) if cache is not None else None
        if columns is None:
            minutes, values = decode_columns(blob, ROLLUP_CHUNK, 5)
            columns = (array("q", minutes), *(array("d", v) for v in values))
            if cache is not None:
                cache.put(blob, columns)
        self._extend(*columns)  # type: ignore[arg-type]

    def extend_buckets(self, buckets: Sequence[Bucket]) -> None:
        self._extend([b.minute for b in buckets], [b.min for b in buckets],
                     [b.max for b in buckets], [b.sum for b in buckets],
                     [float(b.count) for b in buckets], [b.last for b in buckets])

    def _extend(self, minutes: Sequence[int], mins: Sequence[float], maxs: Sequence[float],
                sums: Sequence[float], counts: Sequence[float], lasts: Sequence[float]) -> None:
        self.minutes.extend(minutes)
        self.mins.extend(mins)
        self.maxs.extend(maxs)
        self.sums.extend(sums)
        self.counts.extend(counts)
        self.lasts.extend(lasts)

    def ordered(self) -> bool:
        """Strictly increasing minutes (no minute twice, nothing out of order)."""
        m = self.minutes
        return all(map(lt, m, islice(m, 1, None)))

    def buckets(self) -> list[Bucket]:
        return [Bucket(m, lo, hi, s, int(c), la) for m, lo, hi, s, c, la in zip(
            self.minutes, self.mins, self.maxs, self.sums, self.counts, self.lasts,
            strict=True)]


def aggregate_bucket_columns(cols: BucketColumns, windows: Windows, keep: Sequence[bool],
                             aggregation: str) -> dict[int, float]:
    """:func:`aggregate_buckets` over columns: the same values (the same folds in the same
    order), without a Bucket per minute.  The columns must be :meth:`~BucketColumns.ordered`;
    otherwise this folds them through :func:`merge_sorted` first."""
    if not cols.ordered():
        return aggregate_buckets(merge_sorted(cols.buckets()), windows, keep, aggregation)
    minutes = cols.minutes
    if not minutes:
        return {}
    column = {"min": cols.mins, "max": cols.maxs, "last": cols.lasts,
              "avg": cols.sums, "sum": cols.sums, "count": cols.counts}.get(aggregation)
    if column is None:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    # window k takes the minutes that start in [t_k - step, t_k): one slice of the ordered
    # minutes each, found by bisection; the folds run in C, in minute order (as Bucket.merge)
    start, step = windows.start, windows.step
    first = max(0, windows.of_minute(minutes[0]))
    last = min(windows.count - 1, windows.of_minute(minutes[-1]))
    out: dict[int, float] = {}
    i = bisect_left(minutes, -(-(start + (first - 1) * step) // MINUTE_MS))
    for k in range(first, last + 1):
        j = bisect_left(minutes, -(-(start + k * step) // MINUTE_MS), i)
        if j > i and keep[k]:
            if aggregation == "avg":
                out[k] = reduce(add, cols.sums[i + 1:j], cols.sums[i]) / int(
                    sum(cols.counts[i:j]))
            elif aggregation == "sum":
                out[k] = reduce(add, column[i + 1:j], column[i])
            elif aggregation == "count":
                out[k] = float(int(sum(column[i:j])))
            elif aggregation == "min":
                out[k] = min(column[i:j])
            elif aggregation == "max":
                out[k] = max(column[i:j])
            else:
                out[k] = column[j - 1]
        i = j
    return out


def merge_sorted(buckets: Iterable[Bucket]) -> list[Bucket]:
    """Buckets in time order with equal minutes folded together (earlier source first)."""
    out: list[Bucket] = []
    for b in buckets:
        if out and out[-1].minute == b.minute:
            out[-1].merge(b)
        else:
            out.append(Bucket(b.minute, b.min, b.max, b.sum, b.count, b.last))
    return out


class Windows:
    """The query points ``start, start + step, ... <= end`` in integer milliseconds."""

    def __init__(self, start: float, end: float, step: float) -> None:
        if step <= 0:
            raise ValueError("step must be a positive number of seconds")
        if end < start:
            raise ValueError("end must not be before start")
        self.start = round(start * 1000)
        self.step = max(1, round(step * 1000))
        self.count = (round(end * 1000) - self.start) // self.step + 1

    def point(self, k: int) -> int:
        return self.start + k * self.step

    def of_sample(self, ts_ms: int) -> int:
        """Index of the window ``(t - step, t]`` holding a sample (may be out of range)."""
        return -((self.start - ts_ms) // self.step)

    def of_minute(self, minute: int) -> int:
        """Index of the window ``[t - step, t)`` in which a minute starts."""
        return (minute * MINUTE_MS - self.start) // self.step + 1


def aggregate_samples(ts_ms: Sequence[int], values: Sequence[float], windows: Windows,
                      keep: Sequence[bool], aggregation: str) -> dict[int, float]:
    """Window index -> aggregate, over the windows where ``keep[k]`` is true."""
    acc: dict[int, list[float]] = {}
    for ts, v in zip(ts_ms, values, strict=True):
        k = windows.of_sample(ts)
        if 0 <= k < windows.count and keep[k]:
            acc.setdefault(k, []).append(v)
    return {k: _reduce(vs, aggregation) for k, vs in acc.items()}


def aggregate_buckets(buckets: Sequence[Bucket], windows: Windows, keep: Sequence[bool],
                      aggregation: str) -> dict[int, float]:
    acc: dict[int, Bucket] = {}
    for b in buckets:
        k = windows.of_minute(b.minute)
        if 0 <= k < windows.count and keep[k]:
            seen = acc.get(k)
            if seen is None:
                acc[k] = Bucket(b.minute, b.min, b.max, b.sum, b.count, b.last)
            else:
                seen.merge(b)
    return {k: _reduce_bucket(b, aggregation) for k, b in acc.items()}


def _reduce(values: list[float], aggregation: str) -> float:
    if aggregation == "avg":
        return sum(values) / len(values)
    if aggregation == "min":
        return min(values)
    if aggregation == "max":
        return max(values)
    if aggregation == "sum":
        return sum(values)
    if aggregation == "last":
        return values[-1]
    if aggregation == "count":
        return float(len(values))
    raise ValueError(f"unknown aggregation {aggregation!r}")


def _reduce_bucket(b: Bucket, aggregation: str) -> float:
    if aggregation == "avg":
        return b.sum / b.count
    if aggregation == "count":
        return float(b.count)
    return {"min": b.min, "max": b.max, "sum": b.sum, "last": b.last}[aggregation]
