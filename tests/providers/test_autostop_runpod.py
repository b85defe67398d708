"""Autostop through the reclaim engine against the RunPod fake (validated against the real
spec): the engine, the control plane's executor, ``lifecycle.stop_node`` and RunPod's
``POST /v2/pods/{id}/action`` in one line.  The idle pod, and only it, is warned, then
stopped; ``status`` shows it STOPPED at $0/hr and it is no longer scraped; busy pods are
never stopped; what the stop saved runs while it is stopped and ends when ``up`` starts it.
(Drain-before-stop on a real Slurm cluster: test_autostop.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpuwarden.config import ServeConfig
from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Target
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.providers import STOPPED, parse_description, status, up
from gpuwarden.reclaim import Reclaimer
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.executor import ControlPlaneExecutor
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog.notify import Notifier
from tests.providers.conftest import runpod_spec
from tests.providers.test_runpod_lifecycle import assert_contract_kept

UTIL = "DCGM_FI_DEV_GPU_UTIL"


def snapshot(now: float, util: float) -> dict:
    return {"timestamp": now, "node": {"hostname": "pod"}, "gpus": [
        {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA GeForce RTX 4090", "up": True,
         "simulated": True, "error": None, "fields": {UTIL: util}, "clock_events": {},
         "processes": [], "xids": [], "jobs": []} for i in range(2)]}


def test_the_engine_stops_exactly_the_idle_pod_and_up_starts_it(fake_runpod, runtime, db,
                                                                 tmp_path: Path):
    spec = parse_description(runpod_spec(nodes=3, slurm=False, autostop={
        "idle_minutes": "20s", "warn_before": "5s", "mode": "auto"}))
    up(spec, db, runtime=runtime)
    clock = [1_800_000_000.0]
    sent: list[tuple[str, str]] = []
    config = ServeConfig.model_validate({"scrape": {"interval": 1},
                                         "reclaim": {"interval": "1s"}})
    store = SqliteStore(tmp_path / "metrics.db", clock=lambda: clock[0])
    cp = ControlPlane(config=config, db=db, store=store, clock=lambda: clock[0])
    states: dict[str, TargetState] = {}

    def scrape() -> None:  # what the scraper would leave: node2 idle, the others busy
        now = clock[0]
        states.clear()
        batch = []
        for node in Inventory(db).nodes():
            if node.status == STOPPED:
                continue
            snap = snapshot(now, 0.0 if node.name == "dev-node2" else 93.0)
            states[node.name] = TargetState(Target(node.name, node.url, role=node.role),
                                            up=True, last_scrape=now, last_success=now,
                                            snapshot=snap)
            batch += snapshot_samples(node.name, snap)
        store.append(batch)

    notifier = Notifier(db, ["json://admins.invalid/hook"],
                        sender=lambda url, title, body, kind: sent.append((title, body)) or True)
    reclaim = Reclaimer(db, config, store, lambda: states, delivers=True,
                        executor=ControlPlaneExecutor(cp, actor="reclaim", runtime=runtime),
                        notifier=notifier, clock=lambda: clock[0])

    def cycles(n: int) -> None:
        for _ in range(n):
            clock[0] += 1.0
            scrape()
            asyncio.run(reclaim.cycle())

    victim = next(p for p in fake_runpod.live_pods() if p["name"] == "gw-dev-2")
    cycles(14)  # idle 13 s: under the warning's 15 s
    assert not sent and not fake_runpod.actions
    cycles(3)
    assert [t for t, _ in sent] and all("dev-node2" in t for t, _ in sent), sent
    assert "autostop will stop it" in sent[0][0] and not fake_runpod.actions
    cycles(6)  # past 20 s of idleness
    assert fake_runpod.actions == [(victim["id"], "stop")]  # that pod, and only it
    st = {n.name: (n.status, n.cost_per_hour) for n in status("dev", db, runtime).nodes}
    assert st["dev-node2"] == (STOPPED, 0.0) and st["dev-node1"][0] == "RUNNING", st
    assert "dev-node2" not in [t.name for t in cp.targets()]  # stopped: not scraped
    assert any("stopped by autostop" in t for t, _ in sent), sent
    cycles(2)
    assert {n.name: n.status for n in reclaim.nodes}["dev-node2"] == "stopped"
    stopped_at = next(e for e in reclaim.history() if e["event"] == "acted")["saved_from"]
    saved = reclaim.saved_between(stopped_at, clock[0])
    assert saved == pytest.approx(2 * 0.69 * (clock[0] - stopped_at) / 3600, abs=1e-4)

    up(spec, db, runtime=runtime)  # starts it again
    assert fake_runpod.actions[-1] == (victim["id"], "start")
    cycles(1)
    acted = next(e for e in reclaim.history() if e["event"] == "acted")
    assert acted["saved_until"] == pytest.approx(clock[0])  # the saving ended with the start
    assert len(fake_runpod.actions) == 2  # the busy pods were never touched
    store.close()
    assert_contract_kept(fake_runpod)
