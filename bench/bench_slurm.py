"""Benchmark: one gpuwarden Slurm collector cycle on a 10,000-job queue, against the command
set prometheus-slurm-exporter (vpenso, v0.20 line) runs per scrape, measured in the same run
on the same real local cluster. Also ``squeue --json`` against the ``-O`` format.

Run as root with Slurm installed:  .venv/bin/python bench/bench_slurm.py [--jobs 10000]
Targets: a full cycle < 1 s at 10,000 jobs and >= 3x faster than the baseline. The machine
may be shared: runs are interleaved and medians reported, with minimums beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpuwarden.slurm import LocalSlurmCluster, SlurmAdapter, SlurmCollector
from gpuwarden.slurm.parsers import FieldFormatShape, V0038Shape

# What prometheus-slurm-exporter runs, serially, on every scrape (accounts, cpus, gpus x3,
# nodes, node, partitions x2, queue, scheduler, users).
BASELINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("squeue", ("-a", "-r", "-h", "-o", "%A|%a|%T|%C")),
    ("sinfo", ("-h", "-o", "%C")),
    ("sinfo", ("-a", "-h", "--Format=Nodes: ,GresUsed:", "--state=allocated")),
    ("sinfo", ("-a", "-h", "--Format=Nodes: ,Gres: ,GresUsed:", "--state=idle,allocated")),
    ("sinfo", ("-a", "-h", "--Format=Nodes: ,Gres:")),
    ("sinfo", ("-h", "-o", "%D,%T")),
    ("sinfo", ("-h", "-N", "-O", "NodeList,AllocMem,Memory,CPUsState,StateLong")),
    ("sinfo", ("-h", "-o%R,%C")),
    ("squeue", ("-a", "-r", "-h", "-o%P", "--states=PENDING")),
    ("squeue", ("-a", "-r", "-h", "-o", "%A,%T,%r", "--states=all")),
    ("sdiag", ()),
    ("squeue", ("-a", "-r", "-h", "-o", "%A|%u|%T|%C")),
)
SLEEP = "#!/bin/sh\nsleep 3600\n"


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def submit_held(adapter: SlurmAdapter, count: int, workers: int = 8) -> float:
    def one(i: int) -> None:
        adapter.run("sbatch", ["--parsable", "--hold", f"--job-name=bench-{i}",
                               f"--comment=gpuwarden:profile=train bench {i}", "--gres=gpu:1"],
                    stdin=SLEEP, timeout=60)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - start


def baseline_cycle(adapter: SlurmAdapter) -> None:
    for command, args in BASELINE:
        adapter.run(command, list(args), timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--slurm-conf", type=Path, default=None,
                        help="measure an existing cluster's queue as it is (no cluster is "
                             "started and nothing is submitted)")
    args = parser.parse_args()
    if args.slurm_conf is not None:
        adapter = SlurmAdapter(env={"SLURM_CONF": str(args.slurm_conf)}, timeout=120)
        return measure(adapter, args.repeat)

    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        cluster = LocalSlurmCluster(Path(tmp) / "cluster", nodes=3, gpus_per_node=2,
                                    gpu_type="a100", max_job_count=args.jobs + 1000)
        print(f"starting a local cluster (3 nodes x 2 GPUs) in {tmp} ...", flush=True)
        cluster.up()
        try:
            return run(cluster, args.jobs, args.repeat)
        finally:
            print("stopping the cluster ...", flush=True)
            cluster.down(timeout_s=30)


def run(cluster: LocalSlurmCluster, jobs: int, repeat: int) -> int:
    adapter = SlurmAdapter(env=cluster.env(), timeout=120)
    for node in ("node1", "node2", "node3"):
        adapter.run("sbatch", ["--parsable", f"--nodelist={node}", "--gres=gpu:1",
                               "--job-name=running"], stdin=SLEEP)
    seconds = submit_held(adapter, jobs)
    print(f"submitted {jobs} held jobs in {seconds:.1f} s")
    return measure(adapter, repeat)


def measure(adapter: SlurmAdapter, repeat: int) -> int:
    queue = adapter.jobs()
    running = sum(j.is_running for j in queue)
    print(f"queue has {len(queue)} jobs, {running} running")

    # Cold: a fresh collector (no parsed records to reuse, GPU indices not yet known).
    colds = []
    for _ in range(3):
        snap = SlurmCollector(adapter).collect_once()
        assert snap.up, snap.errors
        colds.append(snap.duration_s)
    # Steady state and baseline, interleaved so both see the same machine load.
    collector = SlurmCollector(adapter)
    collector.collect_once()
    warm: list[float] = []
    base: list[float] = []
    for _ in range(repeat):
        warm.extend(timed(collector.collect_once, 1))
        base.extend(timed(lambda: baseline_cycle(adapter), 1))
    snap = collector.latest()
    assert snap is not None and snap.up and len(snap.jobs) == len(queue)

    text_shape, json_shape = FieldFormatShape(), V0038Shape()
    fmt_cmd = timed(lambda: adapter.run("squeue", text_shape.squeue_args), repeat)
    # A fresh shape each time: a full parse, no records reused.
    fmt_all = timed(lambda: FieldFormatShape().parse_jobs(
        adapter.run("squeue", text_shape.squeue_args).stdout), repeat)
    json_cmd = timed(lambda: adapter.run("squeue", ["--json"], timeout=300), 3)
    json_all = timed(lambda: json_shape.parse_jobs(
        adapter.run("squeue", ["--json"], timeout=300).stdout), 3)

    med = statistics.median
    cycle, baseline, cold = med(warm), med(base), med(colds)
    print()
    print(f"queue: {len(snap.jobs)} jobs, {len(snap.nodes)} nodes; medians of {repeat} "
          f"interleaved runs (min in brackets)")
    print(f"gpuwarden cycle, steady (squeue+sinfo+sdiag, parsed): {cycle:.3f} s "
          f"[{min(warm):.3f}]")
    print(f"gpuwarden cycle, cold (fresh collector, +scontrol):    {cold:.3f} s "
          f"[{min(colds):.3f}] (median of 3)")
    for command, secs in sorted(snap.command_durations.items()):
        print(f"    {command:9s} {secs:.3f} s (last cycle; sinfo/sdiag overlap squeue)")
    print(f"baseline: prometheus-slurm-exporter command set, {len(BASELINE)} serial calls, "
          f"unparsed: {baseline:.3f} s [{min(base):.3f}]")
    print(f"  -> ratio baseline / steady cycle = {baseline / cycle:.1f}x "
          f"[mins: {min(base) / min(warm):.1f}x]; baseline / cold cycle = "
          f"{baseline / cold:.1f}x")
    print(f"squeue -o format: command {med(fmt_cmd):.3f} s, command+parse {med(fmt_all):.3f} s")
    print(f"squeue --json:    command {med(json_cmd):.3f} s, command+parse {med(json_all):.3f} s "
          f"(median of 3)")
    print(f"  -> ratio json / -o format (command+parse) = {med(json_all) / med(fmt_all):.1f}x")
    ok_time, ok_ratio = cycle < 1.0, baseline / cycle >= 3.0
    print(f"targets: cycle < 1 s: {'met' if ok_time else 'MISSED'}; "
          f">= 3x faster than baseline: {'met' if ok_ratio else 'MISSED'}")
    return 0 if ok_time and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
