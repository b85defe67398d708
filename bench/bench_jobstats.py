"""Job report benchmark (issue 16): ``jobstats`` of a big job, ``report`` over many.

* ``jobstats``: the report of a 64-GPU job (8 nodes x 8 GPUs) that ran 24 hours, as
  ``GET /api/v1/slurm/jobs/{id}/report`` computes it (services.jobreport.build_report:
  the job's GPUs from ``gpuwarden_gpu_job_info``, utilization and memory at the step that
  fits 24 h, GPU-hours, $, grades and notes; then the JSON it answers), from an embedded
  store holding 24 h of a 1,000-node fleet's series.  History is written on a fake clock,
  so the store cuts chunks and minute rollups as it would have live: the job's 8 nodes every
  15 s (the series a report reads: utilization, memory used and total, the job-info
  series); the other 992 nodes the same series every FLEET_INTERVAL (15 min by default:
  a Python loader writes ~100,000 samples/s, 24 h of every node at 15 s is 1.1 billion),
  so the series index holds all 1,000 nodes x 8 GPUs the report's selectors match among.
  Storage is per series, so the other nodes' sample density does not change the job's read.
  Baseline: one ``range()`` of the job's 64 utilization series over its 24 h at the
  report's step (the least any report reads).  Target: < 300 ms.  Measured twice: the
  live report (computed from the store: while the job runs, when it ends, and with
  ``?series=true``) and, once the job has ended, the answer from its stored summary.
* ``report --since 7d``: services.efficiency over 10,000 stored summaries of jobs that
  ended in the last 7 days (200 users, 20 accounts), by user and by account, and its CSV.
  Baseline: reading the 10,000 rows' figures once (one SELECT).  Target: < 2 s.

It prints p50/p95 and "met" / "NOT met" per target and exits 0 either way (a measurement,
not a test).  Run: ``make bench`` or ``.venv/bin/python bench/bench_jobstats.py
[--fleet-nodes 1000] [--runs 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from gpuwarden.config import NodeConfig, ServeConfig  # noqa: E402
from gpuwarden.metrics.ingest import JOB_INFO, SampleGroup  # noqa: E402
from gpuwarden.metrics.model import parse_selector  # noqa: E402
from gpuwarden.metrics.sqlite_store import SqliteStore  # noqa: E402
from gpuwarden.services import efficiency, jobreport  # noqa: E402
from gpuwarden.services.context import ControlPlane  # noqa: E402
from gpuwarden.services.models import SlurmJobView  # noqa: E402
from gpuwarden.state.db import StateDB  # noqa: E402
from gpuwarden.state.jobreports import JobReportStore  # noqa: E402

INTERVAL = 15.0
HOURS = 24.0
JOB_NODES = 8
GPUS = 8
JOB_ID = 424242
NODE_COST = 8 * 2.49  # $/hr of an 8 x H100 node
METRICS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_TOTAL")
H100_MIB = 81559.0


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def node_name(i: int) -> str:
    return f"n{i + 1:04d}"


def groups_at(t: float, nodes: range, rng: random.Random, job: bool) -> list[SampleGroup]:
    out = []
    for i in nodes:
        name = node_name(i)
        for g in range(GPUS):
            labels = {"node": name, "gpu": str(g), "UUID": f"GPU-{i:04d}-{g}",
                      "Hostname": name}
            idle = job and i == JOB_NODES - 1 and g >= 6  # two GPUs the job never used
            util = 0.0 if idle else min(100.0, max(0.0, rng.gauss(88.0, 6.0)))
            used = 0.0 if idle else 52_000.0 + rng.uniform(-2000, 2000)
            out.append(SampleGroup(labels, t, METRICS, (util, used, H100_MIB)))
            if job:
                out.append(SampleGroup({**labels, "job_id": str(JOB_ID), "user": "alice",
                                        "partition": "gpu"}, t, (JOB_INFO,), (1.0,)))
    return out


def load(path: Path, fleet_nodes: int, fleet_interval: float, end: float) -> tuple[int, float]:
    clock = FakeClock(end - HOURS * 3600)
    store = SqliteStore(path, clock=clock, synchronous="NORMAL")
    rng = random.Random(16)
    steps = int(HOURS * 3600 / INTERVAL)
    every = max(1, round(fleet_interval / INTERVAL))
    began, samples, batch = time.perf_counter(), 0, []
    for step in range(steps + 1):
        t = clock.t = end - (steps - step) * INTERVAL
        batch += groups_at(t, range(JOB_NODES), rng, job=True)
        if step % every == 0:
            batch += groups_at(t, range(JOB_NODES, fleet_nodes), rng, job=False)
        if len(batch) >= 20_000 or step % 20 == 0 or step == steps:
            store.append_groups(batch)
            samples += sum(len(g.names) for g in batch)
            batch = []
        if step % 960 == 0:
            print(f"  history: {step * INTERVAL / 3600:4.1f} h of {HOURS:g} h, "
                  f"{samples:,} samples, {time.perf_counter() - began:.0f} s", flush=True)
    clock.t = end
    store.maintain()
    store.close()
    return samples, time.perf_counter() - began


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm: the store's index and page cache, as a serving process has them
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return quantiles(times)


def quantiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]


async def timed_async(fn: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float]:
    """``timed`` in one event loop, as the API serves requests."""
    await fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t)
    return quantiles(times)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def bench_jobstats(tmp: Path, args: argparse.Namespace) -> None:
    end = time.time()
    path = tmp / "metrics.db"
    print(f"jobstats: {JOB_NODES} x {GPUS} GPUs for {HOURS:g} h in a {args.fleet_nodes}-node "
          f"store (job nodes every {INTERVAL:g} s, the others every "
          f"{args.fleet_interval:g} s)", flush=True)
    samples, seconds = load(path, args.fleet_nodes, args.fleet_interval, end)
    print(f"  loaded {samples:,} samples in {seconds:.0f} s "
          f"({path.stat().st_size / 2**20:.0f} MiB)", flush=True)
    store = SqliteStore(path, synchronous="NORMAL")
    names = [node_name(i) for i in range(JOB_NODES)]
    config = ServeConfig(cluster="bench", nodes=[
        NodeConfig(name=n, url=f"http://{n}:9400", cost_per_hour=NODE_COST) for n in names])
    cp = ControlPlane(config=config, db=StateDB(tmp / "state.db"), store=store)
    cp.inventory.sync_config(config.cluster, config.nodes)
    job = SlurmJobView(job_id=JOB_ID, name="big-train", user="alice", partition="gpu",
                       account="lab", state="COMPLETED", finished=True, nodes=names,
                       start_time=end - HOURS * 3600, end_time=end, elapsed_s=int(HOURS * 3600),
                       alloc_gpus=JOB_NODES * GPUS, time_limit_s=48 * 3600, source="sacct")
    began = time.perf_counter()
    report = asyncio.run(jobreport.build_report(cp, job))
    cold = time.perf_counter() - began
    step = report.step
    selector = parse_selector(f'DCGM_FI_DEV_GPU_UTIL{{node=~"{"|".join(names)}"}}')

    start = end - HOURS * 3600

    def baseline() -> object:
        return store.range(selector, start + step, start + 240 * step, step, "avg")

    async def jobstats() -> object:
        return (await jobreport.build_report(cp, job)).model_dump_json()

    base50, base95 = timed(baseline, args.runs)
    rep50, rep95 = asyncio.run(timed_async(jobstats, args.runs))
    assert len(report.per_gpu) == JOB_NODES * GPUS, len(report.per_gpu)
    print(f"  report: {report.gpus} GPUs, {report.gpu_hours:.0f} GPU-hours, "
          f"${report.cost:,.2f}, ${report.wasted:,.2f} wasted, step {step:g} s, "
          f"notes: {', '.join(n.kind for n in report.notes) or 'none'}")
    print(f"  read the job's utilization series once (baseline): p50 {base50 * 1e3:7.1f} ms  "
          f"p95 {base95 * 1e3:7.1f} ms")
    print(f"  jobstats report + JSON:                            p50 {rep50 * 1e3:7.1f} ms  "
          f"p95 {rep95 * 1e3:7.1f} ms  = {rep50 / base50:.1f}x the baseline; target < 300 ms: "
          f"{verdict(rep95 < 0.3)}", flush=True)
    print(f"  the first report after the store opened (cold caches): {cold * 1e3:.0f} ms")
    # once the job has ended, its summary is stored and jobstats answers from it
    jobreport.JobReports(cp)._save(report, time.time())

    async def stored() -> object:
        found = await jobreport.job_report(cp, JOB_ID)
        assert found.source == "stored"
        return found.model_dump_json()

    st50, st95 = asyncio.run(timed_async(stored, args.runs))
    print(f"  jobstats of the ended job (its stored summary):    p50 {st50 * 1e3:7.1f} ms  "
          f"p95 {st95 * 1e3:7.1f} ms  = {st50 / base50:.2f}x the baseline; target < 300 ms: "
          f"{verdict(st95 < 0.3)}", flush=True)
    store.close()
    cp.db.close()


def bench_report(tmp: Path, args: argparse.Namespace) -> None:
    now = time.time()
    db = StateDB(tmp / "summaries.db")
    cp = ControlPlane(config=ServeConfig(cluster="bench"), db=db,
                      store=None, clock=lambda: now)  # type: ignore[arg-type]
    rng = random.Random(7)
    store = JobReportStore(db)
    print(f"\nreport --since 7d: {args.summaries:,} stored summaries", flush=True)
    began = time.perf_counter()
    template = None
    with store.write() as conn:
        for i in range(args.summaries):
            hours = rng.uniform(0.1, 12)
            gpus = rng.choice((1, 1, 2, 4, 8))
            end = now - rng.uniform(0, 7 * 86400)
            job = SlurmJobView(job_id=i + 1, name=f"job-{i}", user=f"user{rng.randrange(200)}",
                               account=f"acct{rng.randrange(20)}",
                               partition=rng.choice(("gpu", "gpu-long", "debug", "a100", "l4")),
                               state="COMPLETED", finished=True, start_time=end - hours * 3600,
                               end_time=end, elapsed_s=int(hours * 3600), alloc_gpus=gpus,
                               time_limit_s=86400, nodes=["n0001"])
            if template is None or i % 500 == 0:
                step, n = jobreport.query_step(hours * 3600, 15)
                util = rng.uniform(0, 100)
                series = [jobreport.GpuSeries("n0001", g, [(0.0, util)] * n, [(0.0, 9e3)] * n,
                                              [(0.0, 9e3)] * n, H100_MIB) for g in range(gpus)]
                template = (series, step)
            r = jobreport.compose(job, template[0][:gpus], jobreport.Pricing(default_rate=2.49),
                                  cp.config.reports, idle_threshold=5.0, step=template[1],
                                  now=now)
            data = r.model_dump(mode="json", exclude={"utilization"})
            store.put(conn, "bench", job.job_id, {k: data[k] for k in (
                "user", "account", "partition", "state", "start_time", "end_time",
                "elapsed_s", "gpus", "gpu_hours", "mean_utilization", "cost", "wasted")},
                data, now)
    print(f"  stored in {time.perf_counter() - began:.1f} s", flush=True)

    def baseline() -> object:
        return db.connect().execute(
            "SELECT user, gpu_hours, mean_utilization, cost, wasted FROM job_reports "
            "WHERE cluster = ? AND end_time >= ?", ("bench", now - 7 * 86400)).fetchall()

    def by_user() -> object:
        return efficiency.efficiency(cp, since="7d", by="user").model_dump_json()

    def by_account_csv() -> object:
        return efficiency.efficiency_csv(efficiency.efficiency(cp, since="7d", by="account"))

    base50, _ = timed(baseline, args.runs)
    rows = efficiency.efficiency(cp, since="7d", by="user")
    assert rows.jobs == args.summaries, rows.jobs
    print(f"  read the {args.summaries:,} rows' figures once (baseline): p50 "
          f"{base50 * 1e3:7.1f} ms")
    for label, fn in (("by user, JSON", by_user), ("by account, CSV", by_account_csv)):
        p50, p95 = timed(fn, args.runs)
        print(f"  report --since 7d {label:16}: p50 {p50 * 1e3:7.1f} ms  p95 {p95 * 1e3:7.1f} "
              f"ms  = {p50 / base50:.1f}x the baseline; target < 2 s: {verdict(p95 < 2.0)}",
              flush=True)
    db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet-nodes", type=int, default=1000)
    parser.add_argument("--fleet-interval", type=float, default=900.0)
    parser.add_argument("--summaries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobstats-"))
    try:
        bench_jobstats(tmp, args)
        bench_report(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
