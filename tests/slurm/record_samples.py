"""Record raw Slurm outputs from a real local cluster into tests/slurm/data/.

Run as root with Slurm installed: ``.venv/bin/python tests/slurm/record_samples.py``.
The parser tests read these files; re-record when the scenario or the formats change.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from gpuwarden.slurm.adapter import SlurmAdapter
from gpuwarden.slurm.local import LocalSlurmCluster
from gpuwarden.slurm.parsers.text import FieldFormatShape

DATA = Path(__file__).parent / "data"


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


def sbatch(adapter: SlurmAdapter, *args: str) -> int:
    out = adapter.run("sbatch", ["--parsable", *args], stdin="#!/bin/sh\nsleep 600\n").stdout
    return int(out.strip().split(";")[0])


def main() -> int:
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gw-record-") as tmp:
        cluster = LocalSlurmCluster(Path(tmp) / "c", nodes=4, gpus_per_node=2, gpu_type="a100",
                                    slurmd_timeout=5, extra_conf={"MessageTimeout": "2"})
        cluster.up()
        try:
            record(cluster)
        finally:
            cluster.down()
    return 0


def record(cluster: LocalSlurmCluster) -> None:
    a = cluster.adapter()
    two = sbatch(a, "-N2", "--gres=gpu:2", "-J", "two-node", "-w", "node1,node2",
                 "--comment", "gpuwarden:profile=inference", "-t", "1:00:00")
    one = sbatch(a, "-N1", "--gres=gpu:1", "-J", "one gpu | pipe", "-w", "node3",
                 "--comment", "gpuwarden:profile=train")
    wait_for("jobs running", lambda: all(j.is_running for j in a.jobs()))
    sbatch(a, "-N1", "--gres=gpu:2", "-J", "big", "-p", "gpu")
    sbatch(a, "-N1", "--gres=gpu:2", "-J", "big2")
    sbatch(a, "-N1", "--gres=gpu:2", "-J", "big3")
    sbatch(a, "--hold", "-J", "held", "--gpus=1")
    sbatch(a, "--array=0-2", "--hold", "-J", "arr")
    wait_for("pending reasons", lambda: {"Resources", "Priority"} <= {j.reason for j in a.jobs()})
    a.run("scontrol", ["update", "nodename=node3", "state=drain", "reason=bad fan on gpu1"])
    pid = int((cluster.run_dir / "slurmd.node4.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for("node4 down", lambda: any(n.name == "node4" and n.state == "down"
                                       for n in a.nodes().nodes), timeout=90)
    shape = FieldFormatShape()
    files = {
        "squeue_format.txt": a.run("squeue", shape.squeue_args).stdout,
        "sinfo_format.txt": a.run("sinfo", shape.sinfo_args).stdout,
        "squeue_v0.0.38.json": a.run("squeue", ["--json"]).stdout,
        "sinfo_v0.0.38.json": a.run("sinfo", ["--json"]).stdout,
        "sdiag.txt": a.run("sdiag", []).stdout,
        "scontrol_show_job_detail.txt": a.run(
            "scontrol", ["--details", "--oneliner", "show", "job"]).stdout,
        "scontrol_show_job_detail_one.txt": a.run(
            "scontrol", ["--details", "--oneliner", "show", "job", str(two)]).stdout,
    }
    for name, text in files.items():
        (DATA / name).write_text(text)
        print(f"wrote {DATA / name} ({len(text)} bytes)")
    print(f"two-node job {two}, one-gpu job {one}")


if __name__ == "__main__":
    sys.exit(main())
