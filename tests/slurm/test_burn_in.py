"""The burn-in at ``up`` and the on-demand re-check, on a real local cluster (local
provider, real Slurm): the node whose simulated GPU has a degraded PCIe link stays drained
with the check's reason in ``sinfo -R``, the healthy one runs a job, ``gpuwarden check``
shows the figure and an alert fires; once the fault clears, a re-check resumes the node and
resolves the alert.  In service, a hardware XID that stops by itself (the sim's ``xid-79``)
drains the node under the checks' policy and keeps its alerts firing until a check passes.
And the periodic checks of idle nodes in ``serve`` (``checks.every``), and the NCCL
all-reduce across nodes as one real Slurm step (nccl-tests faked: no GPU here)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuwarden.checks.model import HOLDER_NAME
from gpuwarden.providers import Runtime, down, parse_description, up
from gpuwarden.providers.local import SIM_FAULT_FILE, LocalProvider, slurm_available
from gpuwarden.slurm import SlurmActions, SubmitOptions
from gpuwarden.state.db import StateDB
from tests.conftest import start_serve, stop
from tests.e2e.conftest import _admin_token
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not slurm_available(), reason="needs Slurm and root")]


@pytest.fixture
def db(tmp_path) -> Iterator[StateDB]:
    state = StateDB(tmp_path / "home" / "state.db")
    yield state
    state.close()


def gpuwarden(*args: str, home, token_file) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuwarden", *args, "--token-file",
                           str(token_file)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GPUWARDEN_HOME": str(home), "COLUMNS": "200"})


def test_a_faulty_node_stays_drained_until_its_checks_pass(db, tmp_path):
    spec = parse_description({"name": "brn", "provider": "local", "nodes": 2,
                              "gpus_per_node": 1, "gpu_type": "H100"})
    home = db.path.parent
    with httpx.Client(timeout=10) as http:
        provider = LocalProvider(home, http)
        fault = provider._node_dir(spec, 2) / SIM_FAULT_FILE
        fault.parent.mkdir(parents=True)
        fault.write_text("pcie-degraded\n")
        slurm = provider._slurm(spec)
        rt = Runtime(http=http, env={})
        serve = None
        try:
            report = up(spec, db, runtime=rt)
            assert [p.split(":")[0] for p in report.problems] == [
                "brn-node2 stays drained"], report.problems
            assert "pcie_link: GPU 0: x8 of x16, gen 3 of gen 5" in report.problems[0]

            nodes = {n.name: n for n in slurm.adapter().nodes().nodes}
            assert "DRAIN" not in nodes["brn-node1"].flags  # burned in and resumed
            assert "DRAIN" in nodes["brn-node2"].flags
            sinfo = subprocess.run(["sinfo", "-R", "-h", "-o", "%N|%E"], capture_output=True,
                                   text=True, env={**os.environ, **slurm.env()}, check=True)
            assert ("brn-node2|[gpuwarden-check] pcie_link: GPU 0: x8 of x16, gen 3 of gen 5"
                    in sinfo.stdout.splitlines()), sinfo.stdout

            actions = SlurmActions(slurm.adapter())
            job = actions.submit("#!/bin/sh\ntrue\n", SubmitOptions(name="ok", gres="gpu:1"))
            def ran() -> bool:
                left = [j for j in actions.adapter.jobs() if str(j.job_id) == str(job)]
                # Slurm keeps a finished job in squeue for MinJobAge (300 s)
                return bool(left) and left[0].state == "COMPLETED" and left[0].nodes == (
                    "brn-node1",)

            wait_until("the job ran", ran)

            config = tmp_path / "gpuwarden.yaml"
            config.write_text("scrape: {interval: 1, timeout: 2}\nchecks: {drain: auto}\n"
                              "watchdog: {interval: 1}\n")
            serve = _admin_token(start_serve(config, home))
            token_file = tmp_path / "admin.token"
            token_file.write_text(serve.admin + "\n")
            shown = gpuwarden("check", "brn-node2", home=home, token_file=token_file)
            assert shown.returncode == 1, shown.stdout + shown.stderr
            assert "pcie_link" in shown.stdout and "x8 of x16" in shown.stdout, shown.stdout
            assert "x16 gen 5" in shown.stdout  # the expected figure
            headers = {"Authorization": f"Bearer {serve.admin}"}
            firing = httpx.get(serve.url + "/api/v1/alerts", headers=headers).json()
            # (the daemon's Slurm snapshot may still show the job above pending, for a
            # ReqNodeNotAvail alert of its own: only the nodes' alerts are this test's)
            assert [(a["rule"], a["subject"], a["state"]) for a in firing
                    if a["rule"] != "slurm_node_unavailable"
                    and not a["subject"].startswith("job/")] == [
                ("node_check", "brn-node2", "firing")], firing
            firing = [a for a in firing if a["rule"] == "node_check"]

            def health() -> dict[str, int]:  # the Overview's node health counts
                return httpx.get(serve.url + "/api/v1/overview", headers=headers).json()[
                    "checks"]

            assert health() == {"burn_in": 0, "failing": 1}
            actions.drain("brn-node1", "gpuwarden: burn-in")  # as `up` holds a new node
            wait_until("the Overview counts the burn-in", lambda: health() == {
                "burn_in": 1, "failing": 1})
            actions.resume("brn-node1")
            assert "[gpuwarden-check] pcie_link" in firing[0]["summary"]

            fault.write_text("none\n")  # the fault clears; the node's next poll sees it
            wait_until("a re-check passes", lambda: gpuwarden(
                "check", "brn-node2", home=home, token_file=token_file).returncode == 0)
            wait_until("brn-node2 resumed", lambda: "DRAIN" not in next(
                n for n in slurm.adapter().nodes().nodes if n.name == "brn-node2").flags)
            alerts = httpx.get(serve.url + "/api/v1/alerts?state=all", headers=headers).json()
            assert [a["state"] for a in alerts if a["rule"] == "node_check"] == ["resolved"]
            checks = httpx.get(serve.url + "/api/v1/nodes/brn-node2/checks",
                               headers=headers).json()
            assert [r["trigger"] for r in checks["runs"]][-1] == "burn-in"
            assert checks["runs"][0]["verdict"] == "pass"
            assert checks["runs"][-1]["verdict"] == "fail"

            # in service now: a new fault drains it under the policy (auto here), through
            # the watchdog's actions table, with the failed check's reason
            fault.write_text("slow\n")
            wait_until("the slow GPU fails its check", lambda: gpuwarden(
                "check", "brn-node2", home=home, token_file=token_file).returncode == 1)
            reason = next(n for n in slurm.adapter().nodes().nodes if n.name == "brn-node2")
            assert "DRAIN" in reason.flags, reason
            assert reason.reason.startswith("[gpuwarden-check] clocks_idle: GPU 0: hw_slowdown")
            done = httpx.get(serve.url + "/api/v1/actions", headers=headers).json()
            # and the replacement of its machine, proposed as what would run (checks.replace
            # is dry-run by default), as it was when its burn-in failed: a local node can be
            # replaced, the Slurm controller never
            assert [(a["policy"], a["action"], a["target"], a["state"]) for a in done] == [
                ("checks:replace", "replace_node", "brn-node2", "dry-run"),
                ("checks:drain", "drain_node", "brn-node2", "executed"),
                ("checks:replace", "replace_node", "brn-node2", "dry-run")], done
            fault.write_text("")
            wait_until("it passes again", lambda: gpuwarden(
                "check", "brn-node2", home=home, token_file=token_file).returncode == 0)
            assert "DRAIN" not in next(n for n in slurm.adapter().nodes().nodes
                                       if n.name == "brn-node2").flags

            # a hardware XID, raised once: the watchdog records it as a failed check and
            # drains the node under the same policy; the alerts stay firing after the XID
            # stopped, until a re-check passes (and resumes the node gpuwarden drained)
            fault.write_text("xid-79\n")

            def place():
                return next(n for n in slurm.adapter().nodes().nodes if n.name == "brn-node2")

            wait_until("the XID drains the node", lambda: "DRAIN" in place().flags)
            assert place().reason == "[gpuwarden-check] xid_hardware: GPU 0: XID 79 x1"
            fault.write_text("")  # nothing new; the XID stays counted on the node
            def open_alerts() -> set[tuple[str, str]]:
                return {(a["rule"], a["subject"]) for a in httpx.get(
                    serve.url + "/api/v1/alerts", headers=headers).json()}

            assert {("xid_hardware", "brn-node2/gpu0/xid79"),
                    ("node_check", "brn-node2")} <= open_alerts()
            done = httpx.get(serve.url + "/api/v1/actions", headers=headers).json()
            assert next((a["policy"], a["target"], a["state"]) for a in done
                        if a["policy"] == "checks:drain") == (
                "checks:drain", "brn-node2", "executed"), done
            xid = next(r for r in httpx.get(serve.url + "/api/v1/nodes/brn-node2/checks",
                                             headers=headers).json()["runs"][0]["results"])
            assert (xid["name"], xid["verdict"]) == ("xid_hardware", "fail")
            shown = gpuwarden("check", "brn-node2", home=home, token_file=token_file)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert "DRAIN" not in place().flags
            wait_until("the XID's alerts resolve", lambda: not {
                ("xid_hardware", "brn-node2/gpu0/xid79"), ("node_check", "brn-node2")}
                & open_alerts())
            assert health() == {"burn_in": 0, "failing": 0}
        finally:
            if serve is not None:
                stop(serve.proc)
            down("brn", db, runtime=rt)


# -- periodic checks in `serve` (checks.every) ------------------------------------------------
# with every: 2s, max_parallel: 1 on 3 nodes, one of them running a job: the busy node is
# never checked and its job keeps running, the idle nodes each get a `periodic` run, each
# held meanwhile by an exclusive gpuwarden-check job, never two such jobs at once (sampled
# from squeue, and from the jobs' own start and end times), and no holder job is left behind


def test_idle_nodes_are_checked_one_at_a_time_and_busy_ones_never(db, tmp_path):
    spec = parse_description({"name": "per", "provider": "local", "nodes": 3,
                              "gpus_per_node": 1, "gpu_type": "H100"})
    home = db.path.parent
    with httpx.Client(timeout=10) as http:
        slurm = LocalProvider(home, http)._slurm(spec)
        rt = Runtime(http=http, env={})
        serve = None
        sampling = threading.Event()
        most_running: list[int] = []
        try:
            report = up(spec, db, runtime=rt)
            assert not report.problems, report.problems
            actions = SlurmActions(slurm.adapter())
            busy = actions.submit("#!/bin/sh\nsleep 300\n", SubmitOptions(
                name="busy", nodelist=("per-node1",), output="/dev/null"))

            def job(job_id: int):
                return next(j for j in actions.adapter.jobs() if j.job_id == job_id)

            wait_until("the busy job runs", lambda: job(busy).state == "RUNNING")

            def holders():
                return [j for j in actions.adapter.jobs() if j.name == HOLDER_NAME]

            gpus_held: set[int] = set()

            def sample() -> None:  # squeue while the loop runs: how many holders run at once
                while not sampling.is_set():
                    running = [j for j in holders() if j.state == "RUNNING"]
                    most_running.append(len(running))
                    gpus_held.update(j.gpus_allocated for j in running)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            config = tmp_path / "gpuwarden.yaml"
            config.write_text("scrape: {interval: 1, timeout: 2}\n"
                              "checks: {every: 2s, max_parallel: 1}\n")
            serve = _admin_token(start_serve(config, home))
            headers = {"Authorization": f"Bearer {serve.admin}"}

            def periodic(node: str) -> list[dict]:
                runs = httpx.get(f"{serve.url}/api/v1/nodes/{node}/checks",
                                 headers=headers).json()["runs"]
                return [r for r in runs if r["trigger"] == "periodic"]

            # each idle node twice: the loop goes on, every 2 s, one node at a time
            wait_until("both idle nodes checked twice", lambda: all(
                len(periodic(n)) >= 2 for n in ("per-node2", "per-node3")), timeout=60)
            assert {r["verdict"] for n in ("per-node2", "per-node3")
                    for r in periodic(n)} == {"pass"}
            assert periodic("per-node1") == []
            assert job(busy).state == "RUNNING" and job(busy).nodes == ("per-node1",)
            stop(serve.proc)
            serve = None
            sampling.set()
            sampler.join(10)

            wait_until("no holder job left", lambda: not [
                j for j in holders() if j.state in ("PENDING", "RUNNING", "COMPLETING")])
            held = sorted((j for j in holders() if j.start_time), key=lambda j: j.start_time)
            assert len(held) >= 4, held  # one per periodic run
            assert {n for j in held for n in j.nodes} == {"per-node2", "per-node3"}
            assert all(j.end_time for j in held)
            # Slurm's own record: each holder started after the one before it ended
            for before, after in itertools.pairwise(held):
                assert after.start_time >= before.end_time, (before, after)
            assert max(most_running) == 1, "squeue never caught a holder running"
            # --exclusive holds the node but no GPU: reclaim and job reports leave it alone
            assert gpus_held == {0}, gpus_held
            assert job(busy).state == "RUNNING"
        finally:
            sampling.set()
            if serve is not None:
                stop(serve.proc)
            down("per", db, runtime=rt)


# -- the NCCL all-reduce across nodes ---------------------------------------------------------
# nccl-tests' all_reduce_perf is faked (tests/checks/fake_nccl: the same arguments and output,
# ranks joined through files); srun, the holder job and the per-rank wrapper are real.  Three
# nodes x 2 GPUs: on demand one 6-rank step across them passes; with node3 slow the cluster
# run fails and the pairs around the ring pin it on node3 alone, which is drained; then the
# periodic loop at level long holds the two healthy nodes with one job (their GPUs too) and
# runs the all-reduce as a step of it; alone, node3 runs it inside itself and is resumed.
FAKE_NCCL = Path(__file__).parents[1] / "checks" / "fake_nccl"


def test_the_nccl_check_runs_across_nodes_and_pins_a_slow_one(db, tmp_path, monkeypatch):
    ranks_dir = tmp_path / "nccl-ranks"
    ranks_dir.mkdir()
    # the node daemons `up` starts inherit these, and srun passes them to every rank
    monkeypatch.setenv("PATH", f"{FAKE_NCCL}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NCCL_DIR", str(ranks_dir))
    monkeypatch.setenv("NODE_ADDR", "127.0.0.1")  # the wrapper finds its interface: lo
    spec = parse_description({"name": "ncl", "provider": "local", "nodes": 3,
                              "gpus_per_node": 2, "gpu_type": "H100"})
    home = db.path.parent
    checks = "nccl_allreduce: {threshold: 100, threshold_across: 100}"
    (tmp_path / "quiet.yaml").write_text("scrape: {interval: 1, timeout: 2}\n"
                                         f"checks: {{drain: auto, checks: {{{checks}}}}}\n")
    with httpx.Client(timeout=10) as http:
        slurm = LocalProvider(home, http)._slurm(spec)
        rt = Runtime(http=http, env={})
        serve = None
        try:
            report = up(spec, db, runtime=rt)
            assert not report.problems, report.problems
            actions = SlurmActions(slurm.adapter())
            config = tmp_path / "gpuwarden.yaml"
            config.write_text("scrape: {interval: 1, timeout: 2}\n"
                              f"checks: {{drain: auto, checks: {{{checks}}}}}\n")
            serve = _admin_token(start_serve(config, home))
            token_file = tmp_path / "admin.token"
            token_file.write_text(serve.admin + "\n")
            # (the admin token is printed on the first start only: the later serves take it
            # from here)
            headers = {"Authorization": f"Bearer {serve.admin}"}

            def nccl(node: str, run: int = 0) -> dict:
                runs = httpx.get(f"{serve.url}/api/v1/nodes/{node}/checks",
                                 headers=headers).json()["runs"]
                return next(r for r in runs[run]["results"] if r["name"] == "nccl_allreduce")

            def ranks(step: Path) -> list[dict]:
                return [json.loads(p.read_text()) for p in sorted(step.glob("rank-*.json"))]

            shown = gpuwarden("check", "--level", "long", home=home, token_file=token_file)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert "200 GB/s (3 nodes x 2 GPUs)" in shown.stdout, shown.stdout
            assert ">= 100 GB/s" in shown.stdout  # the expected figure
            steps = list(ranks_dir.iterdir())
            assert len(steps) == 1, steps  # one step across all three, not one per node
            seen = ranks(steps[0])
            assert sorted(r["node"] for r in seen) == [
                "ncl-node1", "ncl-node1", "ncl-node2", "ncl-node2", "ncl-node3", "ncl-node3"]
            assert {r["NCCL_SOCKET_IFNAME"] for r in seen} == {"=lo"}  # set on every node
            assert {r["CUDA_VISIBLE_DEVICES"] for r in seen} == {"0,1"}  # the GPUs allocated
            assert {nccl(n)["verdict"] for n in ("ncl-node1", "ncl-node2", "ncl-node3")} == {
                "pass"}

            (ranks_dir / "slow").write_text("ncl-node3\n")
            shown = gpuwarden("check", "--level", "long", home=home, token_file=token_file)
            assert shown.returncode == 1, shown.stdout + shown.stderr
            bad, good = nccl("ncl-node3"), nccl("ncl-node1")
            assert (bad["verdict"], bad["value"]) == ("fail", 40.0), bad
            assert bad["figure"].startswith("40 GB/s (3 nodes x 2 GPUs); with ncl-node2: 40 GB/s"
                                            " (2 nodes x 2 GPUs); with ncl-node1: 40 GB/s"), bad
            assert good["verdict"] == "pass", good
            assert good["figure"].startswith("3 nodes x 2 GPUs failed, not on this node; "
                                             "with ncl-node2: 200 GB/s"), good
            assert nccl("ncl-node2")["verdict"] == "pass"
            assert len(list(ranks_dir.glob("*/"))) == 1 + 1 + 3  # the run, then 3 pairs
            node3 = next(n for n in actions.adapter.nodes().nodes if n.name == "ncl-node3")
            assert "DRAIN" in node3.flags
            assert node3.reason.startswith("[gpuwarden-check] nccl_allreduce: 40 GB/s"), node3
            assert all("DRAIN" not in n.flags for n in actions.adapter.nodes().nodes
                       if n.name != "ncl-node3")
            stop(serve.proc)
            serve = None

            # periodic, at level long: the two idle healthy nodes held by one job with their
            # GPUs, the all-reduce a step of it (the drained node3 is not due)
            (ranks_dir / "slow").unlink()
            before = set(ranks_dir.iterdir())
            config.write_text("scrape: {interval: 1, timeout: 2}\n"
                              "checks: {every: 20s, max_parallel: 3, level: long, drain: auto, "
                              f"checks: {{{checks}}}}}\n")
            serve = start_serve(config, home)
            wait_until("the two healthy nodes checked together", lambda: all(
                httpx.get(f"{serve.url}/api/v1/nodes/{n}/checks", headers=headers).json()[
                    "runs"][0]["trigger"] == "periodic" for n in ("ncl-node1", "ncl-node2")),
                timeout=90)
            stop(serve.proc)
            serve = start_serve(config.with_name("quiet.yaml"), home)  # no periodic loop
            assert nccl("ncl-node1")["figure"] == "200 GB/s (2 nodes x 2 GPUs)"
            holders = {j.job_id: j for j in actions.adapter.jobs() if j.name == HOLDER_NAME}
            assert holders and {j.nodes for j in holders.values()} == {
                ("ncl-node1", "ncl-node2")}, holders  # each held both, never one alone
            assert {j.gpus_requested for j in holders.values()} == {4}  # their GPUs too
            # (a later round the stop above cut short may have left a step with fewer ranks)
            steps = [seen for step in set(ranks_dir.iterdir()) - before
                     if (seen := ranks(step)) and len(seen) == int(seen[0]["SLURM_NTASKS"])]
            assert steps
            for seen in steps:  # each all-reduce a step of a holder, over both nodes' GPUs
                assert len({r["SLURM_JOB_ID"] for r in seen}) == 1
                assert int(seen[0]["SLURM_JOB_ID"]) in holders
                assert sorted(r["node"] for r in seen) == [
                    "ncl-node1", "ncl-node1", "ncl-node2", "ncl-node2"]
                assert {r["CUDA_VISIBLE_DEVICES"] for r in seen} == {"0,1"}
            wait_until("the holder cancelled", lambda: all(
                j.state not in ("PENDING", "RUNNING") for j in actions.adapter.jobs()
                if j.name == HOLDER_NAME))

            # one node alone: the all-reduce inside it (-g 2), and it is resumed
            shown = gpuwarden("check", "ncl-node3", "--level", "long", home=home,
                              token_file=token_file)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            assert nccl("ncl-node3")["figure"] == "200 GB/s (1 node x 2 GPUs)"
            assert "DRAIN" not in next(n for n in actions.adapter.nodes().nodes
                                       if n.name == "ncl-node3").flags
        finally:
            if serve is not None:
                stop(serve.proc)
            down("ncl", db, runtime=rt)
