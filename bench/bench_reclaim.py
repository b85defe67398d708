"""Reclaim benchmark: one cycle of the job ladder over 1,000 nodes x 8 GPUs and 2,000
running GPU jobs (4 GPUs each; 10 % of jobs idle), printed as a ratio to the watchdog's own
cycle over the same fleet, measured in the same run.

A reclaim cycle is: take the watchdog's view of the fleet (as ``serve`` wires them; without
a watchdog it builds its own), take each GPU's peak utilization since the last cycle (kept
as the scraper publishes each node: ``RunningPeaks.observe``, whose cost is printed too,
on the scraper's side), judge every job, update the ladder's rows.  Target (issue 17):
< 100 ms.  Run with `make bench`.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_watchdog import GPUS, snapshot

from gpuwarden.config import NodeConfig, ServeConfig
from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Target
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.reclaim import Reclaimer
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog import Watchdog
from gpuwarden.watchdog.notify import Notifier

NODES = int(os.environ.get("BENCH_NODES", "1000"))
JOBS_PER_NODE = 2  # 2 jobs x 4 GPUs per 8-GPU node: 2,000 jobs on 1,000 nodes
INTERVAL = 30.0
IDLE_JOBS = 0.10


def slurm_doc(nodes: list[str], now: float) -> dict:
    jobs = []
    for n, name in enumerate(nodes):
        for k in range(JOBS_PER_NODE):
            jid = n * JOBS_PER_NODE + k + 1
            jobs.append({"job_id": jid, "name": f"train-{jid}", "user": f"u{jid % 50}",
                         "partition": "gpu", "account": "lab", "state": "RUNNING",
                         "comment": "", "start_time": now - 7200, "time_limit_s": 86400,
                         "nodes": [name], "gpu_detail": {name: list(range(4 * k, 4 * k + 4))}})
    return {"collected_at": now, "duration_s": 0.1, "up": True, "last_success": now,
            "jobs": jobs}


def main() -> None:
    rng = random.Random(7)
    t0 = time.time()
    clock = [t0]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        nodes = [NodeConfig(name=f"n{i:04d}", url=f"http://127.0.0.1:{10000 + i}",
                            cost_per_hour=20.0, role="controller" if i == 0 else "worker")
                 for i in range(NODES)]
        config = ServeConfig.model_validate({
            "cluster": "bench", "nodes": [n.model_dump() for n in nodes],
            "scrape": {"interval": INTERVAL},
            "reclaim": {"jobs": {"mode": "dry-run", "warn_after": ["60m", "105m"],
                                 "act_after": "120m", "grace": "10m"}}})
        db = StateDB(home / "state.db")
        Inventory(db).sync_config(config.cluster, nodes)
        store = SqliteStore(home / "metrics.db", clock=lambda: clock[0])
        snaps = {n.name: snapshot(i, t0, rng) for i, n in enumerate(nodes)}
        for snap in snaps.values():  # idleness by job, as a forgotten notebook is: 10 % of
            for k in range(JOBS_PER_NODE):  # jobs hold 4 idle GPUs, the rest 4 busy ones
                idle = rng.random() < IDLE_JOBS
                for gpu in snap["gpus"][4 * k:4 * k + 4]:
                    gpu["up"] = True
                    gpu["fields"]["DCGM_FI_DEV_GPU_UTIL"] = 0.0 if idle else 90.0
        states: dict[str, TargetState] = {}
        observing: list[float] = []

        def scrape(now: float) -> None:
            """The fleet as the scraper leaves it at ``now``: fresh states and samples."""
            clock[0] = now
            batch = []
            for n in nodes:
                snap = {**snaps[n.name], "timestamp": now}
                states[n.name] = TargetState(
                    Target(n.name, n.url, role=n.role), up=True, last_scrape=now,
                    last_success=now, snapshot=snap,
                    slurm=slurm_doc([m.name for m in nodes], now) if n.role == "controller"
                    else None)
                batch += snapshot_samples(n.name, snap)
            store.append(batch)
            began = time.perf_counter()  # what the scraper's publish calls, node by node
            for state in states.values():
                reclaim.peaks.observe(state)
            observing.append(time.perf_counter() - began)

        notifier = Notifier(db, [])
        watchdog = Watchdog(db, config, lambda: states)
        # as serve wires them: reclaim reads the watchdog's view of the cycle
        reclaim = Reclaimer(db, config, store, lambda: states, executor=None,
                            notifier=notifier, views=lambda: watchdog.last_view,
                            clock=lambda: clock[0])
        scrape(t0)
        reclaim.judge(t0)  # the first cycle starts every streak
        watchdog.evaluate(t0)
        cycles, dog = [], []
        for k in range(1, 6):
            now = t0 + INTERVAL * k
            scrape(now)
            began = time.perf_counter()
            watchdog.evaluate(now)
            dog.append(time.perf_counter() - began)
            began = time.perf_counter()
            reclaim.judge(now)
            cycles.append(time.perf_counter() - began)
        idle = sum(1 for c in reclaim.candidates if c.status == "idle")
        watched = len(reclaim.candidates)
        store.close()

    cycle, baseline = statistics.median(cycles), statistics.median(dog)
    print(f"reclaim, {NODES} nodes x {GPUS} GPUs, {watched} running GPU jobs "
          f"({idle} idle on the ladder)")
    print(f"watchdog cycle over the same fleet: {baseline * 1e3:.1f} ms (median of 5)")
    print(f"reclaim cycle: {cycle * 1e3:.1f} ms (median of 5) = {cycle / baseline:.2f}x the "
          "watchdog's")
    print(f"running peaks, fed on each node's publish: {statistics.median(observing) * 1e3:.1f} "
          f"ms per scrape of the fleet (scraper side, spread over its {INTERVAL:g} s)")
    print("target (< 100 ms):", "met" if cycle < 0.1 else "NOT met")


if __name__ == "__main__":
    main()
