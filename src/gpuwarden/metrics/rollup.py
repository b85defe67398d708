"""Per-minute rollups and step-window aggregation (pure functions over integer-ms times).

A query point at ``t`` aggregates the samples in ``(t - step, t]``, as ``*_over_time(x[step])``
does in PromQL.  From rollups a point aggregates the minutes that *start* in
``[t - step, t)``: the same thing at one-minute resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def encode_buckets(buckets: Sequence[Bucket]) -> bytes:
    return encode_columns(
        ROLLUP_CHUNK, [b.minute for b in buckets],
        [[b.min for b in buckets], [b.max for b in buckets], [b.sum for b in buckets],
         [float(b.count) for b in buckets], [b.last for b in buckets]])


def decode_buckets(blob: bytes) -> list[Bucket]:
    minutes, (mins, maxs, sums, counts, lasts) = decode_columns(blob, ROLLUP_CHUNK, 5)
    return [Bucket(m, lo, hi, s, int(c), la)
            for m, lo, hi, s, c, la in zip(minutes, mins, maxs, sums, counts, lasts, strict=True)]


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
