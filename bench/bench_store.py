"""Metrics store benchmark: the embedded store (chunked SQLite) against plain row-per-sample
SQLite (the baseline, measured in the same run) and row-per-sample DuckDB (if installed).

Workload (the control-plane issue): 1,000 nodes x 8 GPUs x ~36 fields every 15 s, 24 h.
* ingest: CPU seconds per sample for full 1,000-node batches (~290,000 samples each), after
  the series exist; the 24 h run adds the chunk/rollup maintenance, amortized per sample.
* bytes per sample: database size after 24 h of BENCH_HISTORY_NODES nodes (default 2) at 15 s
  divided by the samples ingested.  Storage is per series, so bytes per sample do not depend
  on the node count: this is the figure for 1,000 nodes too.
* 24 h history of one GPU: ``range()`` of one metric of one GPU over 24 h at a 60 s step
  (p50/p95 over BENCH_QUERIES runs, different GPUs).
* latest of all GPUs for one metric: over the 8,000 GPUs of the ingest database (p50/p95).
Run: ``.venv/bin/python bench/bench_store.py`` (a few minutes on two slow cores).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from gpuwarden.gpu.sim import SimSource  # noqa: E402
from gpuwarden.metrics.ingest import snapshot_samples  # noqa: E402
from gpuwarden.metrics.model import Sample, Selector, parse_selector  # noqa: E402
from gpuwarden.metrics.sqlite_store import SqliteStore  # noqa: E402

try:
    import duckdb
except ImportError:  # optional: the comparison row is skipped
    duckdb = None

FLEET_NODES = int(os.environ.get("BENCH_FLEET_NODES", "1000"))
FLEET_BATCHES = int(os.environ.get("BENCH_FLEET_BATCHES", "3"))
HISTORY_NODES = int(os.environ.get("BENCH_HISTORY_NODES", "2"))
HISTORY_HOURS = float(os.environ.get("BENCH_HISTORY_HOURS", "24"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "40"))
INTERVAL = 15.0
T0 = 1_750_000_000.0
PROFILES = ("train", "inference", "idle", "train", "thermal-throttle", "inference", "train",
            "idle")
METRIC = "DCGM_FI_DEV_GPU_UTIL"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Fleet:
    """N simulated nodes on a fake clock; each scrape is one batch of samples."""

    def __init__(self, nodes: int, seed: int = 7) -> None:
        self.clock = Clock(T0)
        self.sources = [
            SimSource(8, "h100", {g: PROFILES[(n + g) % len(PROFILES)] for g in range(8)},
                      hostname=f"node{n}", seed=seed + n * 8, clock=self.clock)
            for n in range(nodes)]

    def scrape(self, t: float) -> list[Sample]:
        self.clock.t = t
        out: list[Sample] = []
        for n, src in enumerate(self.sources):
            poll = src.poll()
            snap = {"timestamp": t + random.uniform(0, 0.05), "node": {"hostname": f"node{n}"},
                    "gpus": [{"index": s.identity.index, "uuid": s.identity.uuid,
                              "name": s.identity.name, "up": s.up,
                              "fields": dict(s.fields), "processes": []} for s in poll.gpus]}
            out.extend(snapshot_samples(f"node{n}", snap))
        return out


# Row-per-sample stores ----------------------------------------------------------------------


class RowStore:
    """One row per sample: (series_id, ts_ms, value), keyed by series then time."""

    name = "sqlite rows"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self.conn = self.connect()

    def connect(self) -> Any:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE samples (series_id INTEGER, ts INTEGER, value REAL, "
                     "PRIMARY KEY (series_id, ts)) WITHOUT ROWID")
        return conn

    def rows(self, samples: Sequence[Sample]) -> list[tuple[int, int, float]]:
        out = []
        keys: dict[int, tuple[tuple[str, str], ...]] = {}
        for s in samples:
            lk = keys.get(id(s.labels))
            if lk is None:
                lk = keys[id(s.labels)] = tuple(sorted(s.labels.items()))
            sid = self.ids.setdefault((s.metric, lk), len(self.ids) + 1)
            out.append((sid, round(s.timestamp * 1000), s.value))
        return out

    def append(self, samples: Sequence[Sample]) -> None:
        rows = self.rows(samples)
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?)", rows)
        self.conn.execute("COMMIT")

    def sids(self, selector: Selector) -> list[int]:
        return [sid for (metric, lk), sid in self.ids.items()
                if selector.matches(metric, dict(lk))]

    def history(self, selector: Selector, start: float, end: float, step: float) -> Any:
        (sid,) = self.sids(selector)
        return self.conn.execute(
            "SELECT (ts - ?) / ?, avg(value) FROM samples WHERE series_id = ? AND ts > ? "
            "AND ts <= ? GROUP BY 1", (round(start * 1000), round(step * 1000), sid,
                                       round((start - step) * 1000), round(end * 1000))
        ).fetchall()

    def latest(self, selector: Selector) -> Any:
        q = ("SELECT value FROM samples WHERE series_id = ? ORDER BY ts DESC LIMIT 1")
        return [self.conn.execute(q, (sid,)).fetchone() for sid in self.sids(selector)]

    def size(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return self.path.stat().st_size

    def close(self) -> None:
        self.conn.close()


class DuckRowStore(RowStore):
    name = "duckdb rows"

    def connect(self) -> Any:
        conn = duckdb.connect(str(self.path))
        conn.execute("CREATE TABLE samples (series_id INTEGER, ts BIGINT, value DOUBLE)")
        return conn

    def append(self, samples: Sequence[Sample]) -> None:
        rows = self.rows(samples)
        sids, tss, vals = (list(col) for col in zip(*rows, strict=True))
        self.conn.execute("INSERT INTO samples SELECT unnest(?), unnest(?), unnest(?)",
                          [sids, tss, vals])

    def history(self, selector: Selector, start: float, end: float, step: float) -> Any:
        (sid,) = self.sids(selector)
        return self.conn.execute(
            "SELECT (ts - ?) // ?, avg(value) FROM samples WHERE series_id = ? AND ts > ? "
            "AND ts <= ? GROUP BY 1", [round(start * 1000), round(step * 1000), sid,
                                       round((start - step) * 1000), round(end * 1000)]
        ).fetchall()

    def latest(self, selector: Selector) -> Any:
        sids = self.sids(selector)
        return self.conn.execute(
            "SELECT series_id, arg_max(value, ts) FROM samples WHERE series_id IN "
            "(SELECT unnest(?)) GROUP BY series_id", [sids]).fetchall()

    def size(self) -> int:
        self.conn.execute("CHECKPOINT")
        return self.path.stat().st_size


class ChunkedStore:
    name = "chunked sqlite (SqliteStore)"

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.store = SqliteStore(path, clock=clock)

    def append(self, samples: Sequence[Sample]) -> None:
        self.store.append(samples)

    def history(self, selector: Selector, start: float, end: float, step: float) -> Any:
        return self.store.range(selector, start, end, step, "avg")

    def latest(self, selector: Selector) -> Any:
        return self.store.latest(selector)

    def size(self) -> int:
        self.store.maintain()
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        parts = {t: conn.execute(f"SELECT count(*), coalesce(sum(length(data)), 0) FROM {t}")
                 .fetchone() for t in ("chunks", "rollups", "wal")}
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
        print("  chunked store on disk: " + ", ".join(
            f"{t} {n} rows {b / 1e6:.1f} MB" for t, (n, b) in parts.items())
            + f", free pages {free * page / 1e6:.1f} MB, file "
            f"{self.path.stat().st_size / 1e6:.1f} MB", flush=True)
        return self.path.stat().st_size

    def close(self) -> None:
        self.store.close()


# Measurements -----------------------------------------------------------------------------


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def make(kind: str, path: Path, clock: Clock) -> Any:
    if kind == "rows":
        return RowStore(path)
    if kind == "duck":
        return DuckRowStore(path)
    return ChunkedStore(path, clock)


def fleet_run(kind: str, batches: list[list[Sample]], clock: Clock, tmp: Path) -> dict:
    store = make(kind, tmp / f"fleet-{kind}.db", clock)
    clock.t = T0
    store.append(batches[0])  # creates the series
    cpu = 0.0
    n = 0
    for i, batch in enumerate(batches[1:], start=1):
        clock.t = T0 + i * INTERVAL
        shifted = [Sample(s.metric, s.labels, s.value, s.timestamp + i * INTERVAL)
                   for s in batch]
        t = time.process_time()
        store.append(shifted)
        cpu += time.process_time() - t
        n += len(shifted)
    sel = parse_selector(METRIC)
    p50, p95 = timed(lambda: store.latest(sel), QUERIES)
    store.close()
    return {"ingest_us": cpu / n * 1e6, "latest_p50": p50, "latest_p95": p95}


def history_run(kind: str, fleet: Fleet, scrapes: list[list[Sample]], tmp: Path) -> dict:
    clock = Clock(T0)
    store = make(kind, tmp / f"history-{kind}.db", clock)
    t = time.process_time()
    n = 0
    for i, batch in enumerate(scrapes):
        clock.t = T0 + i * INTERVAL
        store.append(batch)
        n += len(batch)
    cpu = time.process_time() - t
    size = store.size()
    end = clock.t
    rng = random.Random(1)

    def query() -> object:
        node, gpu = rng.randrange(len(fleet.sources)), rng.randrange(8)
        sel = parse_selector(f'{METRIC}{{node="node{node}",gpu="{gpu}"}}')
        return store.history(sel, end - 24 * 3600, end, 60.0)

    p50, p95 = timed(query, QUERIES)
    store.close()
    return {"samples": n, "ingest_us_all": cpu / n * 1e6, "bytes_per_sample": size / n,
            "hist_p50": p50, "hist_p95": p95}


def main() -> None:
    kinds = ["rows", "chunked"] + (["duck"] if duckdb is not None else [])
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        print(f"fleet: {FLEET_NODES} nodes x 8 GPUs, {FLEET_BATCHES} batches; history: "
              f"{HISTORY_NODES} nodes x 8 GPUs, {HISTORY_HOURS:g} h at {INTERVAL:g} s",
              flush=True)
        fleet = Fleet(FLEET_NODES)
        batch = fleet.scrape(T0)
        print(f"one fleet batch: {len(batch)} samples", flush=True)
        clock = Clock(T0)
        fleet_res = {k: fleet_run(k, [batch] * FLEET_BATCHES, clock, tmp) for k in kinds}
        hist = Fleet(HISTORY_NODES)
        steps = int(HISTORY_HOURS * 3600 / INTERVAL)
        scrapes = [hist.scrape(T0 + i * INTERVAL) for i in range(steps)]
        hist_res = {k: history_run(k, hist, scrapes, tmp) for k in kinds}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base_f, base_h = fleet_res["rows"], hist_res["rows"]
    print(f"\n{'store':30} {'ingest us/sample':>17} {'incl. maint.':>13} {'bytes/sample':>13} "
          f"{'24h GPU p50/p95 ms':>19} {'latest p50/p95 ms':>18}")
    for k in kinds:
        f, h = fleet_res[k], hist_res[k]
        cells = [
            f"{f['ingest_us']:8.2f} ({ratio(f, base_f, 'ingest_us')})",
            f"{h['ingest_us_all']:6.2f} ({ratio(h, base_h, 'ingest_us_all')})",
            f"{h['bytes_per_sample']:6.2f} ({ratio(h, base_h, 'bytes_per_sample')})",
            f"{h['hist_p50'] * 1e3:7.2f}/{h['hist_p95'] * 1e3:<7.2f}"
            f"({ratio(h, base_h, 'hist_p95')})",
            f"{f['latest_p50'] * 1e3:6.1f}/{f['latest_p95'] * 1e3:<6.1f}"
            f"({ratio(f, base_f, 'latest_p95')})",
        ]
        print(f"{make_name(k):30} " + " ".join(cells))
    per_batch = len(batch) * fleet_res["chunked"]["ingest_us"] / 1e6
    print(f"\nchunked store, one {len(batch)}-sample batch: {per_batch:.2f} CPU s "
          f"= {per_batch / INTERVAL:.0%} of a core at a {INTERVAL:g} s scrape (store only)")


def ratio(row: dict, base: dict, key: str) -> str:
    return f"{row[key] / base[key]:5.2f}x"


def make_name(kind: str) -> str:
    return {"rows": "sqlite rows (baseline)", "duck": "duckdb rows",
            "chunked": "chunked sqlite (SqliteStore)"}[kind]


if __name__ == "__main__":
    main()
