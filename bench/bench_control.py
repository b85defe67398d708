"""Control-plane benchmark: ``gpuwarden serve`` scraping a simulated fleet, against a real
Prometheus scraping the same fleet in the same run.

* The fleet: ``bench/fleet_sim.py``, one process serving NODES nodes x 8 simulated GPUs
  (``/nXXXX/api/v1/snapshot`` for serve, ``/nXXXX/metrics`` for Prometheus).
* History: before serve starts, HISTORY_HOURS (24) of scrapes of HISTORY_NODES nodes are
  written into its fresh store on a fake clock (the store cuts chunks and rollups as it would
  have live).  A Python loader writes ~100,000 samples/s, so 24 h of all 1,000 nodes (1.7
  billion samples) is out of reach; storage is per series, so bytes per sample do not depend
  on the node count, and a history query reads one GPU's series whatever the fleet size.
* For DURATION seconds both serve and Prometheus scrape every node every 15 s.  Every few
  seconds the bench reads serve's CPU (``/proc/PID/stat``) and ``/api/v1/status`` (ingest
  lag, queue, samples) and Prometheus's CPU and ``prometheus_tsdb_head_samples_appended_total``.
* Then, while scraping goes on: p95 of ``GET /api/v1/overview``, of a GPU's 24 h history
  (``/api/v1/gpus/{node}/{i}/history?range=24h``: 6 metrics, 240 points) and of the PromQL
  equivalent (one ``query_range``: avg_over_time of the same 6 metrics of one GPU, 24 h, the
  same step); bytes per stored sample of each.

Targets (the control-plane issue): keeps up with no growing lag on < 50 % of one core;
overview p95 < 50 ms; 24 h history p95 < 100 ms; CPU per sample <= 2x Prometheus; bytes per
sample <= 4x Prometheus.  It prints "met" / "NOT met" per target and exits 0 either way (a
measurement, not a test).  Run: ``make bench`` or ``.venv/bin/python bench/bench_control.py
[--nodes 1000] [--duration 180] [--history-hours 24] [--history-nodes 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gpuwarden.processes import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _fleet_history import load_history, store_bytes  # noqa: E402
from fleet_sim import PROFILE_MIX, node_name  # noqa: E402

INTERVAL = 15.0
HISTORY_METRICS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
                   "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK",
                   "DCGM_FI_DEV_MEM_COPY_UTIL")  # what /history reads (services.history)
TICKS = os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = "\n".join(self.output().splitlines()[-20:])
            raise SystemExit(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def wait_for(self, ready: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if ready(text):
                return text
            self.check_alive()
            time.sleep(0.2)
        raise SystemExit(f"{self.name} not ready after {timeout:.0f} s; log {self.log}")


@dataclass
class Processes:
    """Every process the bench starts; all stopped on exit, error or Ctrl-C."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()


@contextlib.contextmanager
def processes(workdir: Path) -> Iterator[Processes]:
    procs = Processes(workdir)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield procs
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)


# -- configuration -----------------------------------------------------------------------------


def serve_config(path: Path, fleet_url: str, names: list[str]) -> None:
    lines = ["cluster: bench", "scrape: {interval: 15, timeout: 5, concurrency: 64}",
             "store: {kind: sqlite}", "nodes:"]
    lines += [f"  - {{name: {n}, url: '{fleet_url}/{n}', cost_per_hour: 2.0}}" for n in names]
    path.write_text("\n".join(lines) + "\n")


def prometheus_config(path: Path, fleet_port: int, names: list[str]) -> None:
    groups = [{"targets": [f"127.0.0.1:{fleet_port}"],
               "labels": {"__metrics_path__": f"/{n}/metrics", "instance": n, "node": n}}
              for n in names]
    config = {"global": {"scrape_interval": "15s", "scrape_timeout": "5s"},
              "scrape_configs": [{"job_name": "fleet", "static_configs": groups}]}
    path.write_text(json.dumps(config))  # JSON is YAML


# -- measuring -----------------------------------------------------------------------------


def p95_ms(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return (statistics.median(ordered) * 1e3,
            ordered[max(0, round(len(ordered) * 0.95) - 1)] * 1e3)


def timed(request: Callable[[], None], n: int, budget: float, warmup: int = 3) -> list[float]:
    """Seconds each of ``n`` calls of ``request`` took (after ``warmup`` untimed ones),
    stopping early once ``budget`` seconds are spent (at least 10 calls)."""
    for _ in range(warmup):
        request()
    times: list[float] = []
    deadline = time.monotonic() + budget
    while len(times) < n and (len(times) < 10 or time.monotonic() < deadline):
        began = time.perf_counter()
        request()
        times.append(time.perf_counter() - began)
    return times


def prometheus_metric(port: int, name: str) -> float:
    """The sum of a metric's series on Prometheus's own /metrics (2.42+ splits samples
    appended by ``type``).  A labelled counter has no series before its first increment
    (right after start, before the first scrape lands): that reads as 0."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Tick:
    t: float
    serve_cpu: float
    prom_cpu: float
    sim_cpu: float
    lag: float
    queued: int
    samples: int
    scrapes: int
    up: int
    prom_samples: float


def grows(ticks: list[Tick]) -> tuple[bool, str]:
    """Lag grows when its worst in the last third of the run is more than one scrape
    interval above its worst in the first third (after the first interval's warm-up)."""
    steady = [k for k in ticks if k.t >= ticks[0].t + INTERVAL]
    if len(steady) < 6:
        return False, "too short a run to tell"
    third = len(steady) // 3
    first = max(k.lag for k in steady[:third])
    last = max(k.lag for k in steady[-third:])
    verdict = last > first + INTERVAL or (steady[-1].queued > 0 and last > 2 * INTERVAL)
    return verdict, f"worst lag first third {first:.1f} s, last third {last:.1f} s"


# -- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path, procs: Processes) -> None:
    names = [node_name(i, args.nodes) for i in range(args.nodes)]
    python = sys.executable
    home = work / "home"
    home.mkdir()

    fleet_port = free_port()
    sim = procs.start("fleet_sim", [python, str(BENCH / "fleet_sim.py"), "--nodes",
                                    str(args.nodes), "--port", str(fleet_port)])
    fleet_url = f"http://127.0.0.1:{fleet_port}"

    hist_names = names[:min(args.history_nodes, args.nodes)]
    print(f"loading {args.history_hours:g} h of history of {len(hist_names)} nodes "
          f"(every series of their /metrics, every {INTERVAL:g} s) into a fresh store",
          flush=True)
    history = load_history(home, hist_names, args.history_hours, INTERVAL,
                           lambda i, g: PROFILE_MIX[(i + g) % len(PROFILE_MIX)],
                           lambda line: print(line, flush=True))
    print(f"  loaded {history.samples:,} samples in {history.seconds:.0f} s: "
          f"{history.store_bytes / 1e6:.1f} MB", flush=True)
    sim.wait_for(lambda text: "ready:" in text, timeout=300)
    sim.check_alive()

    config = work / "gpuwarden.yaml"
    serve_config(config, fleet_url, names)
    prom_yaml = work / "prometheus.yml"
    prometheus_config(prom_yaml, fleet_port, names)
    serve_port, prom_port = free_port(), free_port()
    prom_data = work / "prometheus"
    serve = procs.start("serve", [python, "-m", "gpuwarden", "serve", "--config", str(config),
                                  "--port", str(serve_port)],
                        env={"GPUWARDEN_HOME": str(home)})
    prom = procs.start("prometheus", [
        args.prometheus, f"--config.file={prom_yaml}", f"--storage.tsdb.path={prom_data}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--web.enable-admin-api",
        "--storage.tsdb.retention.time=2d"])
    text = serve.wait_for(lambda t: "gw_" in t, timeout=300)
    token = next(w for w in text.split() if w.startswith("gw_"))
    api = f"http://127.0.0.1:{serve_port}/api/v1"
    prom_api = f"http://127.0.0.1:{prom_port}/api/v1"
    prom.wait_for(lambda t: "Server is ready to receive web requests" in t, timeout=120)

    client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    pclient = httpx.Client(timeout=60)

    def tick(t0: float) -> Tick:
        status = client.get(f"{api}/status").json()
        return Tick(time.monotonic() - t0, cpu_seconds(serve.pid), cpu_seconds(prom.pid),
                    cpu_seconds(sim.pid), status["ingest"]["lag_seconds"],
                    status["ingest"]["queued"], status["ingest"]["samples"],
                    status["scrape"]["scrapes_total"], status["scrape"]["up"],
                    prometheus_metric(prom_port, "prometheus_tsdb_head_samples_appended_total"))

    print(f"\nscraping {args.nodes} nodes x 8 GPUs every {INTERVAL:g} s for "
          f"{args.duration:g} s (serve and Prometheus at once)", flush=True)
    print(f"{'t s':>5} {'serve %':>8} {'prom %':>7} {'sim %':>6} {'lag s':>6} {'queued':>7} "
          f"{'stored':>11} {'scrapes':>8} {'up':>5}", flush=True)
    t0 = time.monotonic()
    ticks = [tick(t0)]
    while ticks[-1].t < args.duration:
        time.sleep(min(args.tick, max(0.1, args.duration - ticks[-1].t)))
        for proc in (sim, serve, prom):
            proc.check_alive()
        ticks.append(tick(t0))
        a, b = ticks[-2], ticks[-1]
        dt = b.t - a.t
        print(f"{b.t:5.0f} {100 * (b.serve_cpu - a.serve_cpu) / dt:8.1f} "
              f"{100 * (b.prom_cpu - a.prom_cpu) / dt:7.1f} "
              f"{100 * (b.sim_cpu - a.sim_cpu) / dt:6.1f} {b.lag:6.1f} {b.queued:7d} "
              f"{b.samples:11,d} {b.scrapes:8d} {b.up:5d}", flush=True)

    # steady state: after two intervals (series created, the first scrape burst done)
    start = next(k for k in ticks if k.t >= min(2 * INTERVAL, args.duration / 3))
    end = ticks[-1]
    span = end.t - start.t
    serve_cpu = (end.serve_cpu - start.serve_cpu) / span
    prom_cpu = (end.prom_cpu - start.prom_cpu) / span
    sim_cpu = (end.sim_cpu - start.sim_cpu) / span
    serve_samples = end.samples - start.samples
    serve_scrapes = end.scrapes - start.scrapes
    prom_samples = end.prom_samples - start.prom_samples
    expected_scrapes = args.nodes * span / INTERVAL
    scrape_ratio = (end.scrapes - start.scrapes) / expected_scrapes
    growing, lag_note = grows(ticks)

    print("\nmeasuring latency while scraping goes on", flush=True)
    rng = random.Random(1)

    step = max(1.0, round(86400 / 240))  # what /history picks for range=24h

    def get_overview() -> None:
        client.get(f"{api}/overview").raise_for_status()

    def get_history() -> None:
        node, gpu = rng.choice(hist_names), rng.randrange(8)
        client.get(f"{api}/gpus/{node}/{gpu}/history",
                   params={"range": "24h"}).raise_for_status()

    def get_promql() -> None:
        """The same 6 series through Prometheus's query API: one query_range per metric,
        as a client of the API reads them (avg_over_time drops the metric name, so one
        regex query over the 6 names would be refused for duplicate label sets)."""
        node, gpu = rng.choice(hist_names), rng.randrange(8)
        now = time.time()
        for metric in HISTORY_METRICS:
            query = f'avg_over_time({metric}{{node="{node}",gpu="{gpu}"}}[{step:.0f}s])'
            r = pclient.get(f"{prom_api}/query_range",
                            params={"query": query, "start": f"{now - 86400:.3f}",
                                    "end": f"{now:.3f}", "step": f"{step:.0f}"})
            r.raise_for_status()

    budget = args.latency_budget
    overview_times = timed(get_overview, args.requests, budget)
    hist_times = timed(get_history, args.requests, budget)
    overview, hist = p95_ms(overview_times), p95_ms(hist_times)
    sample_hist = client.get(f"{api}/gpus/{hist_names[0]}/0/history",
                             params={"range": "24h"}).json()
    hist_points = {k: len(v) for k, v in sample_hist["series"].items()}
    promql_times = timed(get_promql, args.requests, budget)
    promql = p95_ms(promql_times)
    print(f"  requests timed: overview {len(overview_times)}, history {len(hist_times)}, "
          f"PromQL {len(promql_times)}", flush=True)

    # bytes per sample
    final = client.get(f"{api}/status").json()["ingest"]
    live_samples = final["samples"]
    gw_bytes = store_bytes(history.path)
    gw_live_bps = (gw_bytes - history.store_bytes) / live_samples
    gw_hist_bps = history.store_bytes / history.samples
    prom_total = prometheus_metric(prom_port, "prometheus_tsdb_head_samples_appended_total")
    prom_bytes = dir_bytes(prom_data)
    prom_bps = prom_bytes / prom_total
    prom_wal = dir_bytes(prom_data / "wal")
    snap = pclient.post(f"http://127.0.0.1:{prom_port}/api/v1/admin/tsdb/snapshot").json()
    block_bytes = dir_bytes(prom_data / "snapshots" / snap["data"]["name"])
    prom_block_bps = block_bytes / prometheus_metric(
        prom_port, "prometheus_tsdb_head_samples_appended_total")
    serve_rss, prom_rss, sim_rss = rss_mib(serve.pid), rss_mib(prom.pid), rss_mib(sim.pid)

    serve_cps = serve_cpu * span / serve_samples
    prom_cps = prom_cpu * span / prom_samples
    report(args, ticks, locals())


def report(args: argparse.Namespace, ticks: list[Tick], m: dict) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    keeps_up = not m["growing"] and m["scrape_ratio"] >= 0.95
    print(f"\n== control plane, {args.nodes} nodes x 8 GPUs, scrape every {INTERVAL:g} s, "
          f"steady state over {m['span']:.0f} s (first {m['start'].t:.0f} s excluded)")
    print(f"fleet simulator: {100 * m['sim_cpu']:.1f} % of a core, RSS {m['sim_rss']:.0f} MiB "
          f"(serves both consumers; not the bottleneck while well under 100 %)")
    print(f"serve: {m['serve_samples'] / m['span']:,.0f} samples/s stored, scrapes "
          f"{100 * m['scrape_ratio']:.0f} % of schedule, RSS {m['serve_rss']:.0f} MiB; "
          f"lag {'GROWS' if m['growing'] else 'steady'} ({m['lag_note']})")
    print(f"prometheus: {m['prom_samples'] / m['span']:,.0f} samples/s appended, "
          f"RSS {m['prom_rss']:.0f} MiB")
    print(f"history: {m['history'].nodes} nodes x {m['history'].hours:g} h loaded "
          f"({m['history'].samples:,} samples); /history points per metric: "
          f"{sorted(set(m['hist_points'].values()))}")
    rows = [
        ("serve CPU, % of one core", f"{100 * m['serve_cpu']:.1f}", "< 50, lag steady",
         "", verdict(keeps_up and m["serve_cpu"] < 0.5)),
        ("ingest lag, worst / last s", f"{max(k.lag for k in ticks):.1f} / {ticks[-1].lag:.1f}",
         "not growing", "", verdict(not m["growing"])),
        ("overview p50 / p95 ms", f"{m['overview'][0]:.1f} / {m['overview'][1]:.1f}", "< 50",
         "", verdict(m["overview"][1] < 50)),
        ("24 h history p50 / p95 ms", f"{m['hist'][0]:.1f} / {m['hist'][1]:.1f}", "< 100",
         f"{m['hist'][1] / m['promql'][1]:.1f}x PromQL", verdict(m["hist"][1] < 100)),
        ("PromQL, same 6 series, p50 / p95 ms", f"{m['promql'][0]:.1f} / {m['promql'][1]:.1f}",
         "(baseline)", "", ""),
        ("CPU µs per sample: serve", f"{1e6 * m['serve_cps']:.2f}", "<= 2x Prometheus",
         f"{m['serve_cps'] / m['prom_cps']:.1f}x", verdict(m["serve_cps"] <= 2 * m["prom_cps"])),
        ("CPU µs per sample: Prometheus", f"{1e6 * m['prom_cps']:.2f}", "(baseline)", "", ""),
        ("bytes/sample: serve, live run", f"{m['gw_live_bps']:.2f}", "<= 4x Prometheus",
         f"{m['gw_live_bps'] / m['prom_bps']:.1f}x",
         verdict(m["gw_live_bps"] <= 4 * m["prom_bps"])),
        ("bytes/sample: serve, 24 h history", f"{m['gw_hist_bps']:.2f}", "",
         f"{m['gw_hist_bps'] / m['prom_block_bps']:.1f}x block", ""),
        ("bytes/sample: Prometheus data dir", f"{m['prom_bps']:.2f}", "(baseline)", "", ""),
        ("bytes/sample: Prometheus block", f"{m['prom_block_bps']:.2f}", "(snapshot of head)",
         "", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    heads = ("figure", "value", "target", "ratio", "")
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    per_scrape = m["serve_samples"] / max(1, m["serve_scrapes"])
    notes = [
        f"scrapes: serve ran {100 * m['scrape_ratio']:.0f} % of the scrapes due in the window. "
        "Its ingest lag_seconds only measures scrape-to-store time, so a scraper that falls "
        "behind its schedule (CPU-starved) still shows a small, steady lag: 'keeps up' needs "
        ">= 95 % of the schedule as well.",
        f"CPU per sample: CPU seconds over the steady window / samples stored in it. serve "
        f"stores {per_scrape:.0f} samples per node scrape (the node's /metrics series, up, "
        "scrape duration); Prometheus appends ~396 (the whole /metrics exposition plus its 5 "
        "scrape series).",
        "bytes/sample, serve live: growth of metrics.db and its SQLite -wal file during the "
        "run / samples ingested: at this age the 'wal' table of compressed batches (plus "
        "chunks if a 10-minute boundary passed) and SQLite's own uncheckpointed WAL pages.",
        f"bytes/sample, Prometheus data dir: {m['prom_bytes'] / 1e6:.1f} MB (WAL "
        f"{m['prom_wal'] / 1e6:.1f} MB) / {m['prom_total']:,.0f} samples: at this age all WAL "
        f"and in-memory head, no compacted block. Prometheus block: a TSDB snapshot of the "
        f"head ({m['block_bytes'] / 1e6:.1f} MB), what its 2 h blocks hold; with few samples "
        "per series its index dominates.",
        f"bytes/sample, serve 24 h history: store size / samples after loading "
        f"{m['history'].hours:g} h of {m['history'].nodes} nodes (2 h of raw chunks plus "
        "1-minute rollups for the rest). Storage is per series, so the figure holds for "
        "1,000 nodes.",
        f"PromQL latency: Prometheus holds only the run's {args.duration:g} s, not 24 h, so "
        "its queries read less data than serve's; serve's 24 h history reads rollups for "
        "most of the day.",
        f"this machine: {os.cpu_count()} shared cores, shared by serve, Prometheus, the "
        "simulator, this bench and whatever else runs: the figures are a floor for what "
        "serve can do, and the ratios are the comparable part.",
    ]
    print("\nnotes:")
    for note in notes:
        print(textwrap.fill(note, 96, initial_indent="* ", subsequent_indent="  "))


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=int(env("BENCH_NODES", "1000")))
    parser.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "180")),
                        help="seconds of scraping measured (default 180)")
    parser.add_argument("--history-hours", type=float,
                        default=float(env("BENCH_HISTORY_HOURS", "24")))
    parser.add_argument("--history-nodes", type=int, default=int(env("BENCH_HISTORY_NODES",
                                                                    "2")),
                        help="nodes whose history is loaded (and queried)")
    parser.add_argument("--requests", type=int, default=int(env("BENCH_REQUESTS", "200")),
                        help="requests per latency figure")
    parser.add_argument("--latency-budget", type=float,
                        default=float(env("BENCH_LATENCY_BUDGET", "60")),
                        help="seconds at most per latency figure (at least 10 requests)")
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between readings")
    parser.add_argument("--prometheus", default=env("PROMETHEUS", "prometheus"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if shutil.which(args.prometheus) is None:
        print(f"bench_control: skipped, no {args.prometheus} binary (apt-get install -y "
              "prometheus, or --prometheus PATH)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="gw-bench-control-"))
    try:
        with processes(work) as procs:
            run(args, work, procs)
    except KeyboardInterrupt:
        print("\ninterrupted; every process it started is stopped")
        return 130
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
