"""The burn-in at ``up`` and the on-demand re-check, on a real local cluster (local
provider, real Slurm): the node whose simulated GPU has a degraded PCIe link stays drained
with the check's reason in ``sinfo -R``, the healthy one runs a job, ``gpuwarden check``
shows the figure and an alert fires; once the fault clears, a re-check resumes the node and
resolves the alert.  In service, a hardware XID that stops by itself (the sim's ``xid-79``)
drains the node under the checks' policy and keeps its alerts firing until a check passes.
And the periodic checks of idle nodes in ``serve`` (``checks.every``)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from gpuwarden.providers import Runtime, down, parse_description, up
from gpuwarden.providers.local import SIM_FAULT_FILE, LocalProvider, slurm_available
from gpuwarden.services.checks import HOLDER_NAME
from gpuwarden.slurm import SlurmActions, SubmitOptions
from gpuwarden.state.db import StateDB
from tests.conftest import start_serve, stop
from tests.e2e.conftest import _admin_token
from tests.slurm.conftest import wait_until

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
