"""Watchdog benchmark: one evaluation cycle over 1,000 nodes x 8 GPUs, against the floor
of reading the same data from the store once (the latest value of every metric the rules
read, for every GPU), both measured in the same run.

The watchdog evaluates the scraper's latest snapshots (the same data the dashboard shows),
so its cycle is: build the view, run every rule, move alerts on in the state database.
Target (issue 6): a cycle < 200 ms and < 3x the floor.  Run with `make bench`.
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

from gpuwarden.config import NodeConfig, ServeConfig
from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Target, parse_selector
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog import Watchdog

NODES = int(os.environ.get("BENCH_NODES", "1000"))
GPUS = 8
RULE_METRICS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED",
                "DCGM_FI_DEV_FB_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
                "DCGM_FI_DEV_ROW_REMAP_FAILURE", "gpuwarden_gpu_up")


def snapshot(node: int, now: float, rng: random.Random) -> dict:
    gpus = []
    for i in range(GPUS):
        idle = rng.random() < 0.15
        hot = rng.random() < 0.02
        gpus.append({
            "index": i, "uuid": f"GPU-{node:04d}-{i}", "name": "NVIDIA H100 80GB HBM3",
            "up": rng.random() > 0.002, "simulated": True, "error": None,
            "fields": {"DCGM_FI_DEV_GPU_UTIL": 0.0 if idle else 90.0,
                       "DCGM_FI_DEV_GPU_TEMP": 91.0 if hot else 65.0,
                       "DCGM_FI_DEV_FB_USED": 1000.0 if idle else 70000.0,
                       "DCGM_FI_DEV_FB_TOTAL": 81559.0,
                       "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0,
                       "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0.0},
            "clock_events": {"hw_thermal_slowdown": hot, "gpu_idle": idle},
            "processes": [] if idle else [{"pid": 1, "used_memory_mib": 1.0, "kind": "c"}],
            "xids": [{"xid": 13, "count": 1, "last_seen": now - 30, "kind": "application"}]
            if rng.random() < 0.005 else [],
            "jobs": [{"job_id": str(node * 10 + i), "user": "u", "partition": "gpu",
                      "has_process": not idle}] if rng.random() < 0.5 else [],
        })
    return {"timestamp": now, "node": {"hostname": f"n{node:04d}"}, "gpus": gpus}


def main() -> None:
    rng = random.Random(7)
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        nodes = [NodeConfig(name=f"n{i:04d}", url=f"http://127.0.0.1:{10000 + i}",
                            cost_per_hour=20.0) for i in range(NODES)]
        config = ServeConfig(cluster="bench", nodes=nodes)
        db = StateDB(home / "state.db")
        Inventory(db).sync_config(config.cluster, nodes)
        states = {}
        store = SqliteStore(home / "metrics.db", clock=lambda: now)
        batch = []
        for i, node in enumerate(nodes):
            snap = snapshot(i, now, rng)
            states[node.name] = TargetState(Target(node.name, node.url), up=i % 250 != 0,
                                            last_scrape=now, last_success=now, snapshot=snap)
            batch += snapshot_samples(node.name, snap)
        store.append(batch)

        # the floor: read the same data from the store once
        floors = []
        for _ in range(5):
            began = time.perf_counter()
            read = sum(len(store.latest(parse_selector(m))) for m in RULE_METRICS)
            floors.append(time.perf_counter() - began)
        floor = statistics.median(floors)

        watchdog = Watchdog(db, config, lambda: states)
        began = time.perf_counter()
        first = watchdog.evaluate(now)
        first_cycle = time.perf_counter() - began
        cycles = []
        for k in range(1, 6):
            began = time.perf_counter()
            watchdog.evaluate(now + 15 * k)
            cycles.append(time.perf_counter() - began)
        cycle = statistics.median(cycles)
        open_alerts = len(watchdog.alerts.list(limit=100_000))
        store.close()

    print(f"watchdog, {NODES} nodes x {GPUS} GPUs, {len(watchdog.rules)} rules, "
          f"{open_alerts} open alerts")
    print(f"floor: read {read} latest values of {len(RULE_METRICS)} metrics from the store: "
          f"{floor * 1e3:.1f} ms (median of 5)")
    print(f"first cycle (creates {len(first)} firing and the pending alerts): "
          f"{first_cycle * 1e3:.1f} ms")
    print(f"steady cycle: {cycle * 1e3:.1f} ms (median of 5) = {cycle / floor:.2f}x the floor")
    ok = cycle < 0.2 and cycle < 3 * floor
    print("target (< 200 ms and < 3x the floor):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
