"""Ops agent analyzers on a 1,000-node state: each top question's analyzer latency against the
time to fetch the same facts from the API once (HTTP, same process, same run).

The state: 1,000 nodes x 8 GPUs in the control plane's live view (as the scraper leaves it),
a Slurm controller document with the same 1,000 nodes and ~1,800 jobs (running ones holding
GPUs, some allocated-but-idle, 200 pending), 20 minutes of stored GPU history.

"Cold" means after a second of scrapes landed (1,000 nodes / 15 s: 67 nodes' states are
new, and the services' view of the fleet has expired) - serve's steady state; "warm" means a
second question in the same second.  The figure after every node changed at once (serve's
first cycle) is printed too.  The API floor is
what a client needs to collect the facts the analyzer combines:

    pending     GET /slurm/jobs + GET /slurm/nodes
    waste       GET /gpus
    node        GET /nodes/{n} + GET /slurm/nodes + GET /alerts
    efficiency  GET /slurm/jobs/{id}
    overview    GET /overview

Target (the agent issue): every analyzer answer < 200 ms.  Run with `make bench`.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpuwarden.agent import analyzers
from gpuwarden.config import NodeConfig, ServeConfig
from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Target
from gpuwarden.metrics.scraper import Scraper, TargetState
from gpuwarden.server import open_control_plane
from gpuwarden.services.live import LIVE_MAX_AGE
from gpuwarden.slurm.wire import decode_summary

NODES = int(os.environ.get("BENCH_NODES", "1000"))
GPUS = 8
HISTORY_S, STEP_S = 20 * 60, 30
REPEAT = 7


def build_state(now: float, rng: random.Random):
    snaps, jobs, slurm_nodes = {}, [], []
    job_id = 1000
    for n in range(NODES):
        name = f"n{n:04d}"
        holders: dict[int, dict] = {}
        layout = rng.random()
        groups = [list(range(8))] if layout < 0.4 else (
            [list(range(4)), list(range(4, 8))] if layout < 0.75 else [])
        for gpus in groups:
            job_id += 1
            idle = rng.random() < 0.1
            job = {"job_id": job_id, "name": f"train-{job_id}", "user": f"user{job_id % 37}",
                   "partition": "gpu", "state": "RUNNING", "reason": "None",
                   "nodes": [name], "num_nodes": 1, "num_cpus": 8 * len(gpus),
                   "gpus_requested": len(gpus), "gpus_allocated": len(gpus),
                   "gpu_detail": {name: gpus}, "submit_time": now - 3600,
                   "start_time": now - HISTORY_S, "time_limit_s": 86400, "priority": 100,
                   "comment": "", "idle": idle}
            jobs.append(job)
            for g in gpus:
                holders[g] = job
        gpu_docs = []
        for i in range(GPUS):
            job = holders.get(i)
            busy = job is not None and not job["idle"]
            hot = rng.random() < 0.01
            gpu_docs.append({
                "index": i, "uuid": f"GPU-{n:04d}-{i}", "name": "NVIDIA H100 80GB HBM3",
                "up": True, "simulated": True, "error": None,
                "fields": {"DCGM_FI_DEV_GPU_UTIL": 92.0 if busy else 0.0,
                           "DCGM_FI_DEV_GPU_TEMP": 91.0 if hot else 62.0,
                           "DCGM_FI_DEV_FB_USED": 70000.0 if busy else 500.0,
                           "DCGM_FI_DEV_FB_TOTAL": 81559.0,
                           "DCGM_FI_DEV_POWER_USAGE": 650.0 if busy else 70.0,
                           "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0},
                "clock_events": {"hw_thermal_slowdown": hot, "gpu_idle": not busy},
                "processes": [], "xids": [], "last_xid": None,
                "jobs": [{"job_id": str(job["job_id"]), "user": job["user"],
                          "partition": "gpu", "has_process": busy}] if job else []})
        snaps[name] = {"timestamp": now, "node": {"hostname": name, "backend": "sim"},
                       "health": {"state": "ok"}, "gpus": gpu_docs}
        alloc = len(holders)
        drained = rng.random() < 0.01
        slurm_nodes.append({
            "name": name, "state": "drained" if drained else (
                "allocated" if alloc == GPUS else "mixed" if alloc else "idle"),
            "flags": ["DRAIN"] if drained else [], "reason": "bad fan" if drained else "",
            "reason_time": now - 600 if drained else None, "partitions": ["gpu"],
            "cpus_alloc": alloc * 8, "cpus_total": 64, "gpus_total": GPUS,
            "gpus_alloc": alloc, "gpus_idle": 0 if drained else GPUS - alloc})
    for k in range(200):
        job_id += 1
        jobs.append({"job_id": job_id, "name": f"sweep-{k}", "user": f"user{k % 37}",
                     "partition": "gpu", "state": "PENDING",
                     "reason": "Resources" if k % 3 else "Priority", "nodes": [],
                     "num_nodes": 2, "num_cpus": 128, "gpus_requested": 16,
                     "gpus_allocated": 0, "gpu_detail": {}, "submit_time": now - 900,
                     "start_time": None, "time_limit_s": 7200, "priority": 50 + k,
                     "comment": ""})
    doc = {"collected_at": now, "duration_s": 0.3, "up": True, "errors": {},
           "last_success": now,
           "queue": {"running": sum(j["state"] == "RUNNING" for j in jobs), "pending": 200},
           "pending_reasons": {"Resources": 133, "Priority": 67},
           "gpus": {"total": NODES * GPUS, "alloc": sum(n["gpus_alloc"] for n in slurm_nodes),
                    "idle": sum(n["gpus_idle"] for n in slurm_nodes)},
           "nodes": slurm_nodes,
           "partitions": [{"name": "gpu", "available": "up", "default": True,
                           "nodes": [n["name"] for n in slurm_nodes], "time_limit": "1-00:00:00"}],
           "jobs": [{k: v for k, v in j.items() if k != "idle"} for j in jobs]}
    return snaps, doc, jobs


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def main() -> None:
    import uvicorn

    from gpuwarden.api.app import create_app

    rng = random.Random(11)
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        nodes = [NodeConfig(name=f"n{i:04d}", url=f"http://127.0.0.1:{10000 + i}",
                            cost_per_hour=8 * 2.5, role="controller" if i == 0 else "worker")
                 for i in range(NODES)]
        cp = open_control_plane(ServeConfig(cluster="bench", nodes=nodes), home)
        snaps, doc, jobs = build_state(now, rng)
        slurm = decode_summary(doc)  # once, as the scraper decodes a new Slurm cycle
        print(f"state: {NODES} nodes x {GPUS} GPUs, {len(doc['jobs'])} Slurm jobs "
              f"({doc['queue']['running']} running, 200 pending); loading "
              f"{HISTORY_S // 60} min of history...", flush=True)
        for t in range(int(now - HISTORY_S), int(now), STEP_S):
            batch = []
            for name, snap in snaps.items():
                batch += snapshot_samples(name, {**snap, "timestamp": float(t)})
            cp.store.append(batch)
        scraper = Scraper(targets=cp.targets, client=httpx.AsyncClient(), store=cp.store,
                          clock=lambda: now)
        cp.scraper = scraper
        cp.clock = lambda: now

        def new_cycle(changed: int = NODES) -> None:
            """Scrapes landing: ``changed`` nodes get a new state (all of them: a full cycle
            at once; 1,000 / 15 s: what one second of a steady serve brings)."""
            for node in rng.sample(nodes, changed):
                scraper.states[node.name] = TargetState(
                    Target(node.name, node.url, None, node.role), up=True,
                    last_scrape=time.time(), last_success=time.time(),
                    snapshot=snaps[node.name],
                    slurm=slurm if node.role == "controller" else None)
            scraper.version += 1

        new_cycle()
        token = cp.tokens.create("viewer", "bench")
        server = uvicorn.Server(uvicorn.Config(create_app(cp, run_scraper=False),
                                               host="127.0.0.1", port=0, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1",
                           headers={"Authorization": f"Bearer {token}"}, timeout=60)

        pending = next(j["job_id"] for j in doc["jobs"] if j["reason"] == "Resources")
        running = next(j for j in jobs if j["state"] == "RUNNING" and j["idle"])["job_id"]
        drained = next(n["name"] for n in doc["nodes"] if n["flags"])
        questions = {
            "pending": (lambda: analyzers.explain_pending(cp, pending),
                        lambda: (api.get("/slurm/jobs").raise_for_status(),
                                 api.get("/slurm/nodes").raise_for_status())),
            "waste": (lambda: analyzers.waste_report(cp),
                      lambda: api.get("/gpus").raise_for_status()),
            "node": (lambda: analyzers.node_doctor(cp, drained),
                     lambda: (api.get(f"/nodes/{drained}").raise_for_status(),
                              api.get("/slurm/nodes").raise_for_status(),
                              api.get("/alerts").raise_for_status())),
            "efficiency": (lambda: asyncio.run(analyzers.job_efficiency(cp, job_id=running)),
                           lambda: api.get(f"/slurm/jobs/{running}").raise_for_status()),
            "overview": (lambda: analyzers.cluster_summary(cp),
                         lambda: api.get("/overview").raise_for_status()),
        }
        for analyze, fetch in questions.values():  # a running serve is warm: so are we
            analyze()
            fetch()
        rows, full = [], []
        steady = max(1, round(NODES / 15))  # nodes scraped per second at 15 s
        for name, (analyze, fetch) in questions.items():
            cold, warm, floor, everything = [], [], [], []
            for _ in range(REPEAT):
                new_cycle(steady)
                time.sleep(LIVE_MAX_AGE + 0.1)  # the services' view of a big fleet expires
                cold.append(timed(analyze))
                warm.append(timed(analyze))
                new_cycle(steady)
                time.sleep(LIVE_MAX_AGE + 0.1)
                floor.append(timed(fetch))
            for _ in range(3):
                new_cycle()
                time.sleep(LIVE_MAX_AGE + 0.1)
                everything.append(timed(analyze))
            rows.append((name, statistics.median(cold), max(cold), statistics.median(warm),
                         statistics.median(floor)))
            full.append((name, statistics.median(everything)))
        server.should_exit = True
        cp.store.close()

    print(f"{'question':12} {'cold ms':>9} {'worst':>8} {'warm ms':>9} {'API ms':>9} "
          f"{'cold/API':>9}")
    for name, cold, worst, warm, floor in rows:
        print(f"{name:12} {cold * 1e3:9.1f} {worst * 1e3:8.1f} {warm * 1e3:9.1f} "
              f"{floor * 1e3:9.1f} {cold / floor:8.2f}x")
    print("after every node's state changed at once (serve's start, not its steady state): "
          + ", ".join(f"{name} {t * 1e3:.0f} ms" for name, t in full))
    ok = all(worst < 0.2 for _, _, worst, _, _ in rows)
    print(f"target (every analyzer answer < 200 ms, worst of {REPEAT} runs, each after a "
          f"second of scrapes):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
