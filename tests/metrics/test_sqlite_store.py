"""The embedded store's semantics on real SQLite files."""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gpuwarden.metrics.codec import decode_raw, encode_raw
from gpuwarden.metrics.model import AGGREGATIONS, Sample, parse_selector
from gpuwarden.metrics.sqlite_store import SqliteStore

T0 = 1_700_000_040.0  # a whole minute
STEP = 5.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def open_store(path: Path, clock: Clock, **kw: object) -> SqliteStore:
    options: dict[str, object] = {"raw_seconds": 600, "retention_seconds": 7200,
                                  "chunk_seconds": 60, "rollup_block_seconds": 120}
    options.update(kw)
    return SqliteStore(path, clock=clock, **options)  # type: ignore[arg-type]


def value_at(series: int, i: int) -> float:
    rng = random.Random(series * 100_003 + i)
    return round(rng.uniform(0, 700), 3) if series % 2 else float(rng.randrange(0, 101))


def fill(store: SqliteStore, clock: Clock, minutes: int, series: int = 3) -> dict[int, list]:
    """One batch per 5 s tick for ``minutes``; returns series -> [(ts, value)]."""
    truth: dict[int, list[tuple[float, float]]] = {s: [] for s in range(series)}
    for i in range(int(minutes * 60 / STEP)):
        ts = T0 + i * STEP
        clock.t = ts
        batch = []
        for s in range(series):
            v = value_at(s, i)
            batch.append(Sample("m", {"node": f"n{s // 2}", "gpu": str(s % 2)}, v, ts))
            truth[s].append((ts, v))
        store.append(batch)
    return truth


def reduce(values: list[float], agg: str) -> float:
    return {"avg": lambda: sum(values) / len(values), "min": lambda: min(values),
            "max": lambda: max(values), "sum": lambda: sum(values),
            "last": lambda: values[-1], "count": lambda: float(len(values))}[agg]()


def expected(points: list[tuple[float, float]], start: float, end: float, step: float,
             agg: str, from_buckets: Callable[[float], bool]) -> list[tuple[float, float]]:
    out = []
    k = 0
    while start + k * step <= end + 1e-9:
        t = start + k * step
        if from_buckets(t):  # minutes starting in [t - step, t)
            vals = [v for ts, v in points if t - step <= math.floor(ts / 60) * 60 < t]
        else:
            vals = [v for ts, v in points if t - step < ts <= t]
        if vals:
            out.append((t, reduce(vals, agg)))
        k += 1
    return out


def check(got: list[tuple[float, float]], want: list[tuple[float, float]]) -> None:
    assert [t for t, _ in got] == pytest.approx([t for t, _ in want])
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_latest_series_and_matchers(tmp_path: Path, clock: Clock) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        truth = fill(store, clock, minutes=2, series=4)
        sel = parse_selector('m{node="n0"}')
        got = {s.labels["gpu"]: s.points for s in store.latest(sel)}
        assert got == {"0": [truth[0][-1]], "1": [truth[1][-1]]}
        names = {
            'm{gpu!="0"}': {("n0", "1"), ("n1", "1")},
            'm{node=~"n[01]",gpu="0"}': {("n0", "0"), ("n1", "0")},
            'm{node!~"n0"}': {("n1", "0"), ("n1", "1")},
            'm{missing=""}': {("n0", "0"), ("n0", "1"), ("n1", "0"), ("n1", "1")},
            'm{node=~"n"}': set(),
            "other": set(),
        }
        for text, want in names.items():
            sel = parse_selector(text)
            assert {(x["node"], x["gpu"]) for x in store.series(sel)} == want, text
            assert {(s.labels["node"], s.labels["gpu"]) for s in store.latest(sel)} == want


def test_latest_max_age(tmp_path: Path, clock: Clock) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        store.append([Sample("m", {"a": "old"}, 1.0, T0), Sample("m", {"a": "new"}, 2.0, T0)])
        clock.t = T0 + 30
        store.append([Sample("m", {"a": "new"}, 3.0, T0 + 30)])
        assert {s.labels["a"] for s in store.latest(parse_selector("m"), max_age=10)} == {"new"}
        assert len(store.latest(parse_selector("m"))) == 2
        assert store.latest(parse_selector("m"), max_age=10, now=T0 + 5) != []


def test_rejects_nan_inf_out_of_order_and_garbage(tmp_path: Path, clock: Clock) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        lab = {"g": "0"}
        store.append([Sample("m", lab, 1.0, T0), Sample("m", lab, math.nan, T0 + 1),
                      Sample("m", lab, math.inf, T0 + 1), Sample("m", lab, -math.inf, T0 + 1),
                      Sample("m", lab, 5.0, T0),  # duplicate timestamp
                      Sample("m", lab, 6.0, T0 - 1),  # out of order
                      Sample("m", lab, 7.0, T0 + 3600),  # far in the future
                      Sample("m", lab, 8.0, T0 - 3600)])  # far in the past
        assert store.dropped == 7
        with pytest.raises(TypeError):
            store.append([Sample("m", lab, 2.0, T0 + 2),
                          Sample("m", lab, "garbage", T0 + 3)])  # type: ignore[arg-type]
        (series,) = store.latest(parse_selector("m"))
        assert series.points == [(T0, 1.0)]
    with open_store(tmp_path / "m.db", clock) as store:  # and nothing of it was written
        assert store.range(parse_selector("m"), T0 - 60, T0 + 60, 1, "count")[0].points == [
            (T0, 1.0)]


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_range_raw_every_aggregation(tmp_path: Path, clock: Clock, agg: str) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        truth = fill(store, clock, minutes=8)
        end = clock.t
        start = end - 290.5  # not aligned to the samples
        for s in range(3):
            sel = parse_selector(f'm{{node="n{s // 2}",gpu="{s % 2}"}}')
            (got,) = store.range(sel, start, end, 15, agg)
            check(list(got.points), expected(truth[s], start, end, 15, agg, lambda t: False))


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_range_rollups_every_aggregation(tmp_path: Path, clock: Clock, agg: str) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        truth = fill(store, clock, minutes=30)
        store.maintain()
        end = clock.t
        for step in (60, 180):
            start = T0 + 120
            (got,) = store.range(parse_selector('m{node="n0",gpu="1"}'), start, end, step, agg)
            check(list(got.points), expected(truth[1], start, end, step, agg, lambda t: True))


def test_range_switches_from_rollups_to_raw_at_the_raw_window(tmp_path: Path,
                                                              clock: Clock) -> None:
    with open_store(tmp_path / "m.db", clock) as store:
        truth = fill(store, clock, minutes=30)
        store.maintain()
        now = clock.t
        floor = now - 600  # raw_seconds
        start, step = T0 + 60, 20.0
        (got,) = store.range(parse_selector('m{node="n0",gpu="0"}'), start, now, step, "sum")
        want = expected(truth[0], start, now, step, "sum", lambda t: t - step < floor)
        check(list(got.points), want)
        assert any(t < floor for t, _ in want) and any(t > floor for t, _ in want)


def test_same_answers_from_head_chunks_and_after_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "m.db"
    store = open_store(path, clock, chunk_seconds=300, rollup_block_seconds=600)
    fill(store, clock, minutes=14)
    sel = parse_selector('m{gpu="1"}')
    queries = [(clock.t - 500, clock.t, 15, "avg"), (T0, clock.t, 60, "max"),
               (T0, clock.t, 120, "count")]
    before = [store.range(sel, *q) for q in queries]  # type: ignore[arg-type]
    store.close()  # the head is only in the wal table now
    store = open_store(path, clock, chunk_seconds=300, rollup_block_seconds=600)
    assert [store.range(sel, *q) for q in queries] == before  # type: ignore[arg-type]
    clock.t += 60
    store.maintain()  # head -> chunks, chunks -> rollups
    assert [store.range(sel, *q) for q in queries] == before  # type: ignore[arg-type]
    store.close()


def test_retention(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "m.db"
    with open_store(path, clock, raw_seconds=300, retention_seconds=900) as store:
        fill(store, clock, minutes=10, series=2)
        last = clock.t
        # a series that stops, and one that goes on
        for i in range(1, 25 * 12):
            clock.t = last + i * STEP
            store.append([Sample("m", {"node": "n0", "gpu": "1"}, 1.0, clock.t)])
        store.maintain()
        now = clock.t
        db = sqlite3.connect(path)
        oldest_raw = db.execute("SELECT min(t_first) FROM chunks").fetchone()[0] / 1000
        oldest_rollup = db.execute("SELECT min(t_first) FROM rollups").fetchone()[0] / 1000
        assert now - 300 - 120 <= oldest_raw  # raw kept raw_seconds (+ a rollup block)
        assert now - 900 - 120 <= oldest_rollup <= now - 800
        assert db.execute("SELECT count(*) FROM wal").fetchone()[0] <= 60 / STEP + 1
        db.close()
        assert [s["gpu"] for s in store.series(parse_selector("m"))] == ["1"]
        assert store.range(parse_selector("m"), T0, now, 60, "count")[0].points[0][0] >= (
            now - 900 - 60)


def test_arguments_are_checked(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(ValueError, match="chunk_seconds"):
        SqliteStore(tmp_path / "a.db", chunk_seconds=90)
    with pytest.raises(ValueError, match="raw_seconds"):
        SqliteStore(tmp_path / "b.db", raw_seconds=100, retention_seconds=10)
    with open_store(tmp_path / "m.db", clock) as store:
        with pytest.raises(ValueError, match="aggregation"):
            store.range(parse_selector("m"), T0, T0 + 10, 1, "median")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="too many"):
            store.range(parse_selector("m"), T0, T0 + 86400, 1)
    with pytest.raises(RuntimeError, match="closed"):
        store.latest(parse_selector("m"))


@pytest.mark.parametrize("values", [
    [0.0] * 40,
    [float(i % 7) for i in range(50)],
    [round(random.Random(3).uniform(-1e6, 1e6), 3) for _ in range(64)],
    [random.Random(4).random() for _ in range(64)],
    [1e300, -1e-300, 0.1, -0.0, 2.0**60, 123456789.123],
    [5.0],
])
def test_codec_round_trips_exactly(values: list[float]) -> None:
    times = [1_700_000_000_000 + 15_000 * i + (i % 3) for i in range(len(values))]
    got_t, got_v = decode_raw(encode_raw(times, values))
    assert got_t == times
    assert [math.copysign(1, v) for v in got_v] == [math.copysign(1, v) for v in values]
    assert got_v == values


def test_readers_run_alongside_the_writer(tmp_path: Path, clock: Clock) -> None:
    """Reads in other threads never fail or wait for the writer's disk work, and always see
    whole batches, whether a series' samples sit in the head, in chunks or in between."""
    import threading

    store = open_store(tmp_path / "m.db", clock, maintenance_budget=1)
    stop = threading.Event()
    seen: list[set[float]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                result = store.range(parse_selector("m"), T0, T0 + 3600, 30, "count")
                seen.append({sum(v for _, v in s.points) for s in result})
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        fill(store, clock, minutes=12, series=4)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not errors
    assert len(seen) > 10
    assert all(len(counts) <= 1 for counts in seen)  # every series has the same count
    store.close()
