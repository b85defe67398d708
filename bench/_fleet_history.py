"""Synthetic history for the control-plane benchmark: past scrapes of simulated nodes written
into a fresh embedded store before ``gpuwarden serve`` opens it.

Each node is a :class:`~gpuwarden.gpu.sim.SimSource` polled on a fake clock every
``interval`` seconds from ``hours`` ago until now; its snapshot goes through the scraper's
own ``gpu.wire.encode_snapshot`` -> ``snapshot_samples`` path, plus ``up`` and
``scrape_duration_seconds`` as the scraper adds them.  The store runs on the same fake clock,
so its chunks and rollups are cut as they would have been live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.gpu.sim import SimSource
from gpuwarden.gpu.wire import encode_snapshot
from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Sample
from gpuwarden.node.poller import GpuPoller


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True)
class HistoryLoad:
    nodes: int
    hours: float
    samples: int
    seconds: float
    path: Path  # the store's database file
    store_bytes: int


def store_path(home: Path) -> Path:
    """Where ``open_store(StoreConfig(), home)`` keeps the embedded store."""
    from gpuwarden.config import StoreConfig
    from gpuwarden.metrics import open_store

    store = open_store(StoreConfig(), home)
    try:
        return Path(store.path)  # type: ignore[attr-defined]
    finally:
        store.close()


def store_bytes(path: Path) -> int:
    """The store's files on disk: the database and SQLite's own write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def load_history(home: Path, node_names: list[str], hours: float, interval: float,
                 profiles: Callable[[int, int], str],
                 progress: Callable[[str], None] = print) -> HistoryLoad:
    """Fill the store under ``home`` (created afresh) with ``hours`` of scrapes of
    ``node_names``, ending now."""
    from gpuwarden.config import StoreConfig
    from gpuwarden.metrics.sqlite_store import SqliteStore

    path = store_path(home)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    end = time.time()
    clock = FakeClock(end - hours * 3600)
    cfg = StoreConfig()
    store = SqliteStore(path, clock=clock, raw_seconds=cfg.raw_retention_hours * 3600,
                        retention_seconds=cfg.retention_days * 86400, synchronous="NORMAL")
    pollers = []
    for i, name in enumerate(node_names):
        source = SimSource(8, "h100", {g: profiles(i, g) for g in range(8)}, hostname=name,
                           seed=i * 1000, clock=clock)
        pollers.append((name, GpuPoller(source, hostname=name, interval=interval, clock=clock)))
    began = time.perf_counter()
    samples = 0
    steps = int(hours * 3600 / interval)
    batch: list[Sample] = []
    for step in range(steps):
        t = clock.t = end - (steps - step) * interval
        for name, poller in pollers:
            snap = poller.poll_once()
            assert snap is not None
            batch += snapshot_samples(name, encode_snapshot(snap, t))
            labels = {"node": name}
            batch.append(Sample("up", labels, 1.0, t))
            batch.append(Sample("scrape_duration_seconds", labels, 0.004, t))
        if len(batch) >= 20_000 or step == steps - 1:
            store.append(batch)
            samples += len(batch)
            batch = []
        if step % 480 == 0:
            progress(f"  history: {step * interval / 3600:5.1f} h of {hours:g} h, "
                     f"{samples:,} samples, {time.perf_counter() - began:.0f} s")
    clock.t = end
    store.maintain()
    dropped = store.dropped
    store.close()
    if dropped:
        progress(f"  history: the store dropped {dropped:,} samples")
    return HistoryLoad(len(node_names), hours, samples - dropped, time.perf_counter() - began,
                       path, store_bytes(path))
