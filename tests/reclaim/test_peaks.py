"""Reclaim's running peaks: the scraper feeds them as it publishes each node (a real node
daemon, the real scraper), a failed scrape adds nothing, and a spike between two cycles
keeps a job off the ladder though both cycles' latest samples are idle; stale data is still
"unknown", never idle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gpuwarden.config import ServeConfig
from gpuwarden.metrics.model import Target
from gpuwarden.metrics.scraper import Scraper, TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.reclaim import Reclaimer
from gpuwarden.reclaim.peaks import UTIL, RunningPeaks
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog.notify import Notifier
from tests.conftest import free_port, start_daemon, stop


def test_the_scraper_feeds_the_peaks_and_a_failed_scrape_adds_nothing(tmp_path: Path):
    daemon = start_daemon(["--gpu-backend", "sim", "--sim-gpus", "2", "--sim-profile",
                           "0=train", "--interval", "1", "--no-auth"])
    peaks = RunningPeaks()
    store = SqliteStore(tmp_path / "metrics.db")

    async def scrape(*targets: Target) -> None:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: targets, client, store, timeout=2)
            scraper.subscribers.append(peaks.observe)
            for t in targets:
                await scraper.scrape_once(t)

    try:
        asyncio.run(scrape(Target("n1", daemon.url),
                           Target("gone", f"http://127.0.0.1:{free_port()}")))
    finally:
        stop(daemon.proc)
        store.close()
    got = peaks.take()
    assert set(got) == {("n1", 0), ("n1", 1)}, got  # nothing from the node that failed
    assert got[("n1", 0)] > got[("n1", 1)], got  # the training GPU is the busy one
    assert peaks.take() == {}  # a take starts afresh


T0 = 1_800_000_000.0


def _snapshot(now: float, util: float) -> dict:
    return {"timestamp": now, "node": {"hostname": "n1"}, "gpus": [
        {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA A100", "up": True, "error": None,
         "fields": {UTIL: util}, "clock_events": {}, "processes": [], "xids": [], "jobs": []}
        for i in range(2)]}


def _slurm(now: float) -> dict:
    return {"collected_at": now, "duration_s": 0.1, "up": True, "last_success": now, "jobs": [
        {"job_id": 7, "name": "train", "user": "u", "partition": "gpu", "account": "lab",
         "state": "RUNNING", "comment": "", "start_time": now - 3600, "time_limit_s": 86400,
         "nodes": ["n2"], "gpu_detail": {"n2": [0, 1]}}]}


def test_a_spike_between_two_cycles_keeps_a_job_busy_and_stale_data_is_unknown(
        tmp_path: Path):
    config = ServeConfig.model_validate({
        "cluster": "c", "scrape": {"interval": 1},
        "nodes": [{"name": "n1", "url": "http://127.0.0.1:9", "role": "controller"},
                  {"name": "n2", "url": "http://127.0.0.1:10"}],
        "reclaim": {"jobs": {"mode": "auto", "warn_after": ["30s"], "act_after": "60s",
                             "grace": "1s"}}})
    db = StateDB(tmp_path / "state.db")
    Inventory(db).sync_config(config.cluster, config.nodes)
    store = SqliteStore(tmp_path / "metrics.db")
    clock = [T0]
    states: dict[str, TargetState] = {}
    reclaim = Reclaimer(db, config, store, lambda: states, executor=None,
                        notifier=Notifier(db, []), clock=lambda: clock[0])

    def publish(dt: float, util: float, nodes: tuple[str, ...] = ("n1", "n2")) -> None:
        """What the scraper does for each node: the job runs on n2, n1 is the controller."""
        clock[0] += dt
        now = clock[0]
        for n in nodes:
            controller = n == "n1"
            states[n] = TargetState(
                Target(n, "http://127.0.0.1:9", role="controller" if controller else "worker"),
                up=True, last_scrape=now, last_success=now, snapshot=_snapshot(now, util),
                slurm=_slurm(now) if controller else None)
            reclaim.peaks.observe(states[n])

    def status() -> tuple[str, float | None]:
        reclaim.judge()
        (cand,) = reclaim.candidates
        return cand.status, cand.idle_since

    try:
        publish(0, 0.0)
        assert status() == ("idle", T0)
        publish(0.5, 80.0)  # busy for one scrape, between two cycles
        publish(0.5, 0.0)
        assert status()[0] == "busy"
        publish(1, 0.0)
        assert status() == ("idle", clock[0])  # a new streak
        publish(10, 0.0, ("n1",))  # n2 not scraped since: stale, so not idle
        state, since = status()
        assert state == "unknown" and since is None
    finally:
        store.close()


def test_a_slurm_snapshot_ages_by_its_own_interval_before_it_is_stale(tmp_path: Path):
    """A 1 s scrape beside a 15 s Slurm cycle: the snapshot is up to 15 s old between two
    cycles, and that is not staleness (it was, and paused every ladder for most of each
    Slurm cycle); past its interval plus ``stale_after`` it is."""
    config = ServeConfig.model_validate({
        "cluster": "c", "scrape": {"interval": 1},
        "nodes": [{"name": "n1", "url": "http://127.0.0.1:9", "role": "controller"},
                  {"name": "n2", "url": "http://127.0.0.1:10"}],
        "reclaim": {"jobs": {"warn_after": ["30s"], "act_after": "60s", "grace": "1s"}}})
    db = StateDB(tmp_path / "state.db")
    Inventory(db).sync_config(config.cluster, config.nodes)
    store = SqliteStore(tmp_path / "metrics.db")
    states: dict[str, TargetState] = {}
    reclaim = Reclaimer(db, config, store, lambda: states, executor=None,
                        notifier=Notifier(db, []), clock=lambda: T0)

    def judged(age: float, interval: float | None) -> str | None:
        for n in ("n1", "n2"):
            slurm = {**_slurm(T0 - age), "interval_s": interval} if n == "n1" else None
            states[n] = TargetState(
                Target(n, "http://127.0.0.1:9", role="controller" if n == "n1" else "worker"),
                up=True, last_scrape=T0, last_success=T0, snapshot=_snapshot(T0, 0.0),
                slurm=slurm)
        reclaim.judge()
        return reclaim.paused_why

    try:
        assert judged(12, 15) is None and reclaim.candidates[0].status == "idle"
        assert judged(12, None) == "the Slurm snapshot is 12s old"  # no interval: 3 s allowed
        assert judged(19, 15) == "the Slurm snapshot is 19s old"  # 15 s + 3 s allowed
    finally:
        store.close()
