"""Record raw Slurm outputs from a real local cluster into tests/slurm/data/.

Run as root with Slurm installed: ``.venv/bin/python tests/slurm/record_samples.py``.
The parser tests read these files; re-record when the scenario or the formats change.
With accounting installed (mariadb-server, slurmdbd) it also records finished jobs as sacct
tells them (``sacct_parsable2.txt``, ``sacct_v0.0.38.json``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuwarden.slurm.adapter import SlurmAdapter
from gpuwarden.slurm.local import LocalSlurmCluster
from gpuwarden.slurm.parsers.sacct import sacct_args
from gpuwarden.slurm.parsers.text import FieldFormatShape

DATA = Path(__file__).parent / "data"


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


def sbatch(adapter: SlurmAdapter, *args: str, script: str = "#!/bin/sh\nsleep 600\n") -> int:
    out = adapter.run("sbatch", ["--parsable", *args], stdin=script).stdout
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
    if cluster.has_accounting:
        record_finished(cluster, a)


def record_finished(cluster: LocalSlurmCluster, a: SlurmAdapter) -> None:
    """Jobs that completed, failed, were killed by a signal or cancelled, as sacct (text
    and 22.05's JSON) tells them."""
    a.run("scancel", ["--user", "root"])
    a.run("scontrol", ["update", "nodename=node3", "state=resume"])
    wait_for("queue empty", lambda: not [j for j in a.jobs() if not j.is_finished])
    time.sleep(1)  # the cancelled jobs above end before the window starts
    started = time.time()
    sbatch(a, "-J", "ok", "--gres=gpu:1", "-w", "node1", script="#!/bin/sh\ntrue\n")
    sbatch(a, "-J", "exit 3", script="#!/bin/sh\nexit 3\n")
    sbatch(a, "-J", "killed", script="#!/bin/sh\nkill -9 $$\n")
    sbatch(a, "-J", "two gpus", "-N2", "--gres=gpu:2", "-w", "node1,node2",
           script="#!/bin/sh\nsrun true\n")
    sbatch(a, "-J", "arr", "--array=1-2", script="#!/bin/sh\ntrue\n")
    cancelled = sbatch(a, "-J", "cancelled")
    wait_for("the sleeper running", lambda: any(j.job_id == cancelled and j.is_running
                                                for j in a.jobs()))
    a.run("scancel", [str(cancelled)])
    wait_for("every job in sacct", lambda: len(a.finished_jobs(started)) >= 7)
    text = a.run("sacct", sacct_args(started)).stdout
    env = {k: v for k, v in a.env.items() if k != "SLURM_TIME_FORMAT"}  # --json needs so
    doc = subprocess.run(["sacct", "--json", "--allusers", "--allocations", "--starttime",
                          time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))],
                         env=env, capture_output=True, text=True, check=True).stdout
    for name, body in (("sacct_parsable2.txt", text), ("sacct_v0.0.38.json", doc)):
        (DATA / name).write_text(body)
        print(f"wrote {DATA / name} ({len(body)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
