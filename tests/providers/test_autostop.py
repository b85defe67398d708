"""Autostop enforced by ``gpuwarden serve`` on a real local cluster (local provider, real
Slurm): the idle worker is warned, drained, then stopped for real (its daemon and slurmd
end, ``status`` says STOPPED at $0/hr) and the admins are told; the controller, which runs
a job, is never stopped; what the stop saves grows while it is stopped; ``up`` starts the
node again and Slurm takes it back."""

from __future__ import annotations

import time

import httpx
import pytest

from gpuwarden.providers import STOP_REASON, STOPPED, Runtime, down, parse_description, status, up
from gpuwarden.providers.local import LocalProvider, slurm_available
from gpuwarden.slurm import SlurmActions, SubmitOptions
from tests.conftest import start_serve, stop
from tests.e2e.conftest import _admin_token
from tests.slurm.test_reclaim import Receiver
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not slurm_available(), reason="needs Slurm and root")]


def test_an_idle_worker_is_stopped_and_up_brings_it_back(db, tmp_path):
    spec = parse_description({
        "name": "aut", "provider": "local", "nodes": 2, "gpus_per_node": 1,
        "price_per_gpu_hour": 3.0,
        "autostop": {"idle_minutes": "8s", "warn_before": "4s", "mode": "auto"}})
    admins = Receiver()
    home = db.path.parent
    with httpx.Client(timeout=10) as http:
        rt = Runtime(http=http, env={})
        up(spec, db, runtime=rt)
        slurm = LocalProvider(home, http)._slurm(spec)
        actions = SlurmActions(slurm.adapter())
        job = actions.submit("#!/bin/sh\nsleep 600\n", SubmitOptions(
            name="busy", gres="gpu:1", nodelist=("aut-node1",),
            comment="gpuwarden:profile=train"))
        config = tmp_path / "gpuwarden.yaml"
        config.write_text("scrape: {interval: 1, timeout: 2}\n"
                          f"watchdog: {{interval: 1, notify: ['{admins.url}']}}\n"
                          # data up to 6 s old counts as fresh: on a loaded CI machine a
                          # 1 s scrape is often late, and each late one restarts the streak
                          "reclaim: {interval: 1s, stale_after: 6s}\n")
        serve = _admin_token(start_serve(config, home))
        headers = {"Authorization": f"Bearer {serve.admin}"}
        try:
            def node(name: str):
                return next(n for n in status("aut", db, rt).nodes if n.name == name)

            wait_until("the idle worker stopped", lambda: node("aut-node2").status == STOPPED,
                       timeout=60)
            worker = node("aut-node2")
            assert worker.cost_per_hour == 0
            assert node("aut-node1").status == "RUNNING"  # its job keeps it
            assert actions.adapter.jobs()[0].state == "RUNNING"
            snode = next(n for n in slurm.adapter().nodes().nodes if n.name == "aut-node2")
            assert "DRAIN" in snode.flags and snode.reason.startswith(STOP_REASON), snode
            wait_until("the stop told", lambda: any("stopped by autostop" in m["title"]
                                                    for m in admins.messages), timeout=10)
            titles = [m["title"] for m in admins.messages]
            assert any("node aut-node2 idle for" in t and "autostop will stop it" in t
                       for t in titles), titles
            assert not any("aut-node1" in t for t in titles), titles
            def states() -> dict[str, str]:
                plan = httpx.get(serve.url + "/api/v1/reclaim", headers=headers).json()
                return {n["name"]: n["status"] for n in plan["nodes"]}

            wait_until("the plan shows it stopped", lambda: states() == {
                "aut-node1": "busy", "aut-node2": "stopped"}, timeout=10)
            events = httpx.get(serve.url + "/api/v1/reclaim/history",
                               headers=headers).json()
            acted = next(e for e in events if e["event"] == "acted" and e["kind"] == "node")
            assert acted["rate_per_hour"] == pytest.approx(3.0) and acted["saved_until"] is None
            time.sleep(0.5)  # let the stopped time grow by a measurable amount
            saved = httpx.get(serve.url + "/api/v1/overview", headers=headers).json()
            elapsed = time.time() - acted["saved_from"]
            assert saved["reclaim_saved_today"] == pytest.approx(3.0 * elapsed / 3600,
                                                                  abs=0.002)
            assert not [line for line in serve.lines if "cycle failed" in line], serve.lines
        finally:
            stop(serve.proc)
            admins.server.shutdown()
        up(spec, db, runtime=rt)  # starts the stopped node again
        assert node("aut-node2").status == "RUNNING"
        wait_until("Slurm took it back", lambda: next(
            n for n in slurm.adapter().nodes().nodes if n.name == "aut-node2").state == "idle",
            timeout=30)
        actions.cancel(job)
        down("aut", db, runtime=rt)
