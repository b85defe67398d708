"""The burn-in at ``up`` and the on-demand re-check, on a real local cluster (local
provider, real Slurm): the node whose simulated GPU has a degraded PCIe link stays drained
with the check's reason in ``sinfo -R``, the healthy one runs a job, ``gpuwarden check``
shows the figure and an alert fires; once the fault clears, a re-check resumes the node and
resolves the alert.  In service, a hardware XID that stops by itself (the sim's ``xid-79``)
drains the node under the checks' policy and keeps its alerts firing until a check passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from gpuwarden.providers import Runtime, down, parse_description, up
from gpuwarden.providers.local import SIM_FAULT_FILE, LocalProvider, slurm_available
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
            assert [(a["policy"], a["action"], a["target"], a["state"]) for a in done] == [
                ("checks:drain", "drain_node", "brn-node2", "executed")], done
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
            assert next((a["policy"], a["target"], a["state"]) for a in done) == (
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
