"""Node daemon benchmark: scrape latency, CPU per poll and RSS for 8 GPUs, against a floor
measured in the same run (prometheus_client serving the same number of static samples).

Targets (issue 2): p99 scrape < 5 ms, RSS < 60 MB, polling < 1 % of a core at 5 s.
Run with `make bench`; not part of `make test`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gpuwarden.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRAPES = int(os.environ.get("BENCH_SCRAPES", "1000"))
TOKEN = "bench-token-0123456789abcdef"  # the node refuses tokens under 16 characters


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise SystemExit(f"benchmark process exited: {output}")
        try:
            httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def measure(url: str) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(headers=headers, timeout=5) as client:
        for _ in range(50):
            body = client.get(url).text
        times = []
        for _ in range(SCRAPES):
            start = time.perf_counter()
            r = client.get(url)
            times.append(time.perf_counter() - start)
            r.raise_for_status()
    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3, samples


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GPUWARDEN_NODE_TOKEN": TOKEN,
                                 "PYTHONPATH": str(ROOT)})


def cpu_per_poll(make_source) -> float:
    from gpuwarden.node.poller import GpuPoller

    source = make_source()
    poller = GpuPoller(source, hostname="bench", interval=5.0)
    for _ in range(20):
        poller.poll_once()
    n = 300
    start_cpu = time.process_time()
    for _ in range(n):
        poller.poll_once()
    used = (time.process_time() - start_cpu) / n
    source.close()
    return used


def floor_render_cpu(samples: int) -> float:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    gauge = Gauge("floor", "static", ["gpu", "k"], registry=registry)
    for i in range(samples):
        gauge.labels(str(i % 8), str(i)).set(i)
    n = 300
    start_cpu = time.process_time()
    for _ in range(n):
        generate_latest(registry)
    return (time.process_time() - start_cpu) / n


def main() -> None:
    from gpuwarden.gpu.nvml import NvmlSource
    from gpuwarden.gpu.sim import SimSource
    from tests.fakes.fake_pynvml import FakeNvml, h100

    procs: list[subprocess.Popen] = []
    results = {}
    try:
        sim_port, nvml_port = free_port(), free_port()
        procs.append(start([sys.executable, "-m", "gpuwarden", "node", "--gpu-backend", "sim",
                            "--sim-gpus", "8", "--sim-profile", "train", "--port",
                            str(sim_port)]))
        procs.append(start([sys.executable, str(ROOT / "bench" / "_node_processes.py"),
                            "fake-nvml", str(nvml_port)]))
        for name, port, proc in (("sim", sim_port, procs[0]), ("fake-nvml", nvml_port, procs[1])):
            url = f"http://127.0.0.1:{port}/metrics"
            wait_up(url, proc)
            p50, p99, samples = measure(url)
            results[name] = (p50, p99, samples, rss_mib(proc.pid))
        samples = results["fake-nvml"][2]
        floor_port = free_port()
        procs.append(start([sys.executable, str(ROOT / "bench" / "_node_processes.py"), "floor",
                            str(floor_port), str(samples)]))
        floor_url = f"http://127.0.0.1:{floor_port}/metrics"
        wait_up(floor_url, procs[2])
        f50, f99, fsamples = measure(floor_url)
        frss = rss_mib(procs[2].pid)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)

    cpu = {
        "sim": cpu_per_poll(lambda: SimSource(8, "h100", {i: "train" for i in range(8)})),
        "fake-nvml": cpu_per_poll(
            lambda: _started(NvmlSource(FakeNvml([h100(i) for i in range(8)])))),
    }
    floor_cpu = floor_render_cpu(samples)

    print(f"node daemon, 8 GPUs, {SCRAPES} scrapes each (keep-alive, loopback)")
    print(f"floor: prometheus_client http server, {fsamples} static samples: "
          f"p50 {f50:.2f} ms, p99 {f99:.2f} ms, RSS {frss:.1f} MiB, "
          f"render CPU {floor_cpu * 1e3:.3f} ms")
    print(f"{'backend':<10} {'samples':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99/floor':>9} "
          f"{'RSS MiB':>8} {'RSS/floor':>9} {'poll CPU ms':>11} {'% core@5s':>9} "
          f"{'poll/floor':>10}")
    ok = True
    for name, (p50, p99, n, rss) in results.items():
        per_poll = cpu[name]
        core = per_poll / 5.0 * 100
        print(f"{name:<10} {n:>7} {p50:>7.2f} {p99:>7.2f} {p99 / f99:>9.2f} {rss:>8.1f} "
              f"{rss / frss:>9.2f} {per_poll * 1e3:>11.3f} {core:>9.4f} "
              f"{per_poll / floor_cpu:>10.2f}")
        ok &= p99 < 5.0 and rss < 60 and core < 1.0
    print("targets: p99 < 5 ms, RSS < 60 MB, polling < 1 % of a core at 5 s:",
          "met" if ok else "NOT met")


def _started(source):
    source.start()
    return source


if __name__ == "__main__":
    main()
