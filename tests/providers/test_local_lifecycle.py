"""up -> status -> down on the local provider: node daemons on this machine, joined into a
real local Slurm cluster when Slurm is installed and we are root."""

from __future__ import annotations

import os

import httpx
import pytest

from gpuwarden import processes
from gpuwarden.errors import ConflictError, GpuwardenError
from gpuwarden.providers import (
    STOP_REASON,
    STOPPED,
    Runtime,
    down,
    parse_description,
    start_node,
    status,
    stop_node,
    up,
)
from gpuwarden.providers.local import LocalProvider, slurm_available
from gpuwarden.slurm import SlurmActions, SubmitOptions
from gpuwarden.state.inventory import Inventory
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def test_local_up_status_down(db, tmp_path):
    spec = parse_description({"name": "loc", "provider": "local", "nodes": 2,
                              "gpus_per_node": 1})
    with httpx.Client(timeout=10) as http:
        rt = Runtime(http=http, env={})
        report = up(spec, db, runtime=rt)
        assert report.ready and [n.role for n in report.nodes] == ["controller", "worker"]
        pids = [n.provider_id for n in report.nodes]
        again = up(spec, db, runtime=rt)  # idempotent: the same processes
        assert [n.provider_id for n in again.nodes] == pids

        inv = {n.name: n for n in Inventory(db).nodes()}
        assert set(inv) == {"loc-node1", "loc-node2"}
        node = inv["loc-node1"]
        assert http.get(node.url + "/api/v1/snapshot").status_code == 401  # token required
        token = node.token_file.read_text().strip()
        snap = http.get(node.url + "/api/v1/snapshot",
                        headers={"Authorization": f"Bearer {token}"}).json()
        assert len(snap["gpus"]) == 1
        if slurm_available():
            summary = http.get(node.url + "/api/v1/slurm",
                               headers={"Authorization": f"Bearer {token}"}).json()
            # Slurm knows the nodes by their inventory names (so actions on alerts hit them)
            assert {n["name"] for n in summary["nodes"]} == {"loc-node1", "loc-node2"}

        st = status("loc", db, rt)
        assert [n.status for n in st.nodes] == ["RUNNING", "RUNNING"] and st.cost_so_far == 0

        stop_and_start(spec, db, rt)  # on the same cluster: one Slurm start for both tests
        pids = [n.provider_id for n in status("loc", db, rt).nodes]

        result = down("loc", db, runtime=rt)
        assert sorted(result.terminated) == ["loc-node1", "loc-node2"]
        assert Inventory(db).nodes() == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                import os

                os.kill(int(pid), 0)


def stop_and_start(spec, db, rt) -> None:
    """A node stopped for real (its daemon and slurmd end, Slurm drains it, status says
    STOPPED at $0/hr), refused while a job runs on it, started again by `up` and by
    `start_node` (Slurm resumes it)."""
    home = db.path.parent
    slurm = LocalProvider(home, rt.http)._slurm(spec) if slurm_available() else None

    def slurm_node(name: str):
        assert slurm is not None
        return next(n for n in slurm.adapter().nodes().nodes if n.name == name)

    def slurmd_alive(name: str) -> bool:
        assert slurm is not None
        return processes.alive(processes.read_pid(slurm.run_dir / f"slurmd.{name}.pid"))

    if slurm is not None:  # a job on the node: it is not stopped, nor left drained
        options = SubmitOptions(nodelist=("loc-node2",), time="5", output="/dev/null")
        job = SlurmActions(slurm.adapter()).submit("#!/bin/sh\nsleep 60\n", options)
        wait_until("loc-node2 runs the job", lambda: slurm_node("loc-node2").state in (
            "allocated", "mixed"), timeout=20, interval=0.1)
        with pytest.raises(GpuwardenError, match="loc-node2 still runs Slurm jobs"):
            stop_node("loc", "loc-node2", db, runtime=rt)
        assert "DRAIN" not in slurm_node("loc-node2").flags and slurmd_alive("loc-node2")
        SlurmActions(slurm.adapter()).cancel(job)
        wait_until("loc-node2 idle again", lambda: slurm_node("loc-node2").state == "idle",
                   timeout=20, interval=0.1)

    with pytest.raises(ConflictError, match="loc-node1 is the Slurm controller"):
        stop_node("loc", "loc-node1", db, runtime=rt)  # while loc-node2 runs
    before = {n.name: n for n in status("loc", db, rt).nodes}
    record = stop_node("loc", "loc-node2", db, runtime=rt)
    assert (record.status, record.cost_per_hour, record.healthy) == (STOPPED, 0.0, False)
    assert not processes.alive(int(before["loc-node2"].provider_id))
    st = status("loc", db, rt)
    assert [n.status for n in st.nodes] == ["RUNNING", STOPPED] and not st.problems
    assert stop_node("loc", "loc-node2", db, runtime=rt).status == STOPPED  # idempotent
    if slurm is not None:
        assert not slurmd_alive("loc-node2") and slurmd_alive("loc-node1")
        node = slurm_node("loc-node2")
        assert "DRAIN" in node.flags and node.reason.startswith(STOP_REASON)

    report = up(spec, db, runtime=rt)  # `up` starts the stopped node again
    assert report.ready and report.nodes[0].provider_id == before["loc-node1"].provider_id
    if slurm is not None:
        node = slurm_node("loc-node2")
        assert node.state == "idle" and not node.flags, node  # resumed, responding
    stop_node("loc", "loc-node2", db, runtime=rt)
    started = start_node("loc", "loc-node2", db, runtime=rt)
    assert (started.status, started.healthy) == ("RUNNING", True)
    assert Inventory(db).nodes()[1].url == started.url
    if slurm is not None:
        assert slurm_node("loc-node2").state == "idle" and slurmd_alive("loc-node2")


def test_local_budget_uses_the_price_status_shows(db, tmp_path):
    """budget_per_hour is checked against the same $/hr that `status` reports per node."""
    from gpuwarden.errors import GpuwardenError
    from gpuwarden.providers.local import LocalProvider

    spec = parse_description({"name": "pricey", "provider": "local", "nodes": 2,
                              "gpus_per_node": 2, "price_per_gpu_hour": 2.69,
                              "budget_per_hour": 1})
    with pytest.raises(GpuwardenError, match=r"would cost \$10\.76/hr, over the cap of \$1\.00"):
        up(spec, db, runtime=Runtime(env={}))
    assert Inventory(db).nodes() == []  # nothing was created
    provider = LocalProvider(tmp_path / "home", httpx.Client())
    per_node = [provider._record(spec, i, check=False).cost_per_hour for i in (1, 2)]
    assert provider.quote(spec) == pytest.approx(sum(per_node)) == pytest.approx(10.76)


def test_a_spawned_daemon_runs_in_its_own_directory(tmp_path, monkeypatch):
    """What a daemon writes by a relative path (a job's slurm-N.out when the node daemon
    submits one without an output) lands beside its log, not in the caller's directory."""
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    node_dir = tmp_path / "node1"
    pid = processes.spawn(["sh", "-c", "echo job > slurm-1.out"], dict(os.environ),
                          "spawn-cwd-test", node_dir / "node.log", tmp_path / "pid")
    wait_until("the child to exit", lambda: not processes.alive(pid), timeout=10,
               interval=0.05)
    assert (node_dir / "slurm-1.out").read_text() == "job\n"
    assert list(caller.iterdir()) == []
