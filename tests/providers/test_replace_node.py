"""``replace_node`` / ``gpuwarden replace`` against the fake RunPod server (validated against
the real spec): the failed pod is terminated, a new one is created under the same name and
tag through ``up``'s create path, the cluster keeps its node count and leaves no orphan; the
refusals (static, the Slurm controller, no capacity, a Slurm controller that cannot say
which jobs run) touch nothing, and a create that fails after the terminate says so and
``up`` recreates the node.  With a real local Slurm cluster behind the fake's pods: a node
running a job is refused, a free one is drained, replaced and burned in; the local
provider's replace goes through the same burn-in."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

import gpuwarden.providers.lifecycle as lifecycle
from gpuwarden.checks.store import CheckStore
from gpuwarden.cli import app
from gpuwarden.errors import ConflictError, GpuwardenError
from gpuwarden.providers import Runtime, down, parse_description, replace_node, status, up
from gpuwarden.providers.base import Workspace
from gpuwarden.providers.local import LocalProvider, slurm_available
from gpuwarden.providers.registry import home_of, save_description
from gpuwarden.slurm import SlurmActions, SubmitOptions
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from tests.providers.conftest import runpod_spec
from tests.providers.test_node_stop import pod_named, static_spec
from tests.providers.test_runpod_lifecycle import assert_contract_kept
from tests.slurm.conftest import wait_until


def replaced(db) -> list[tuple[str, str, dict]]:
    return [(e["target"], e["outcome"], e["detail"]) for e in AuditLog(db).list()
            if e["action"] == "replace_node"]


def test_replace_terminates_the_pod_and_creates_one_under_the_same_name(fake_runpod,
                                                                         runtime, db):
    spec = parse_description(runpod_spec(nodes=3, slurm=False))
    up(spec, db, runtime=runtime)
    old = pod_named(fake_runpod, "gw-dev-2")
    others = {p["id"] for p in fake_runpod.live_pods() if p["id"] != old["id"]}
    seen: list[str] = []

    report = replace_node("dev", "dev-node2", db, seen.append, runtime)

    live = fake_runpod.live_pods()
    new = pod_named(fake_runpod, "gw-dev-2")
    assert new["id"] != old["id"] and old["id"] not in {p["id"] for p in live}
    assert {p["id"] for p in live} == others | {new["id"]}  # 3 pods, no orphan
    assert fake_runpod.calls["createPod"] == 4 and fake_runpod.calls["deletePod"] == 1
    # the create request (validated against the spec) is the one `up` sent for that node
    assert (new["image"], new["args"], new["gpu"]) == (old["image"], old["args"], old["gpu"])
    assert new["env"] == old["env"] and new["env"]["GPUWARDEN_CLUSTER"] == "dev"
    assert new["env"]["GPUWARDEN_NODE_RANK"] == "1"
    assert fake_runpod.deliveries[new["id"]] == 1  # its secrets delivered, as at `up`
    assert report.ready and [n.name for n in report.nodes] == ["dev-node1", "dev-node2",
                                                               "dev-node3"]
    st = {n.name: n.provider_id for n in status("dev", db, runtime).nodes}
    assert st["dev-node2"] == new["id"] and len(st) == 3
    inv = {n.name: n for n in Inventory(db).nodes()}
    assert len(inv) == 3 and new["id"] in inv["dev-node2"].url
    assert any(f"replaced {old['id']} with {new['id']}" in s for s in seen), seen
    [(target, outcome, detail)] = replaced(db)
    assert (target, outcome, detail["old"], detail["new"]) == ("dev-node2", "executed",
                                                               old["id"], new["id"])
    down("dev", db, runtime=runtime)
    assert fake_runpod.live_pods() == []
    assert_contract_kept(fake_runpod)


def test_refusals_touch_nothing(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(nodes=2))  # with Slurm: the fake's pods run none
    up(spec, db, runtime=runtime)
    before = {p["id"] for p in fake_runpod.live_pods()}
    with pytest.raises(ConflictError, match="dev-node1 is the Slurm controller"):
        replace_node("dev", "dev-node1", db, runtime=runtime)
    # the controller's daemon cannot tell which jobs run on the node: refused, not guessed
    with pytest.raises(GpuwardenError, match=r"cannot tell whether Slurm runs jobs on it.*"
                                             r"--force"):
        replace_node("dev", "dev-node2", db, runtime=runtime)
    fake_runpod.capacity["NVIDIA GeForce RTX 4090"] = 0
    with pytest.raises(GpuwardenError, match="no capacity"):
        replace_node("dev", "dev-node2", db, runtime=runtime, force=True)
    assert {p["id"] for p in fake_runpod.live_pods()} == before
    assert fake_runpod.calls["deletePod"] == 0 and fake_runpod.calls["createPod"] == 2
    assert [o for _, o, _ in replaced(db)] == ["refused"] * 3

    fake_runpod.capacity.clear()
    report = replace_node("dev", "dev-node2", db, runtime=runtime, force=True)
    assert report.ready and len(fake_runpod.live_pods()) == 2
    assert pod_named(fake_runpod, "gw-dev-2")["id"] not in before
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_static_refuses(db):
    save_description(Workspace(home_of(db), "lab"), static_spec())
    with pytest.raises(GpuwardenError, match="cannot replace it: the static provider"):
        replace_node("lab", "box1", db)


def test_create_failing_after_the_terminate_says_so_and_up_recreates(fake_runpod, runtime,
                                                                     db):
    spec = parse_description(runpod_spec(nodes=2, slurm=False))
    up(spec, db, runtime=runtime)
    old = pod_named(fake_runpod, "gw-dev-2")
    fake_runpod.inject("createPod", 400)
    with pytest.raises(GpuwardenError, match=r"dev-node2: its old machine .* was terminated "
                                             r"but creating the new one failed: .*"
                                             r"`gpuwarden up` creates it"):
        replace_node("dev", "dev-node2", db, runtime=runtime)
    assert [p["name"] for p in fake_runpod.live_pods()] == ["gw-dev-1"]  # nothing unrecorded
    assert [n.name for n in Inventory(db).nodes()] == ["dev-node1"]
    assert any("missing" in p for p in status("dev", db, runtime).problems)
    assert replaced(db)[0][1] == "failed"
    up(spec, db, runtime=runtime)
    assert sorted(p["name"] for p in fake_runpod.live_pods()) == ["gw-dev-1", "gw-dev-2"]
    assert pod_named(fake_runpod, "gw-dev-2")["id"] != old["id"]
    down("dev", db, runtime=runtime)
    assert fake_runpod.live_pods() == []


@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="needs Slurm and root")
def test_on_real_slurm_a_busy_node_is_refused_and_a_free_one_burned_in(fake_runpod, runtime,
                                                                      db, tmp_path):
    """The fake's pods front the node daemons of a real local Slurm cluster of the same
    node names (another gpuwarden home): the drain, the job check and the burn-in reach
    real Slurm through the pods' proxy URLs."""
    gpus = {"gpus_per_node": 2, "gpu_type": "NVIDIA GeForce RTX 4090"}
    local_spec = parse_description({"name": "rpl", "provider": "local", "nodes": 2, **gpus})
    local_db = StateDB(tmp_path / "local" / "state.db")
    with httpx.Client(timeout=10) as http:
        local_rt = Runtime(http=http, env={})
        try:
            machines = up(local_spec, local_db, runtime=local_rt).nodes
            for index, machine in enumerate(machines, start=1):
                fake_runpod.daemons[f"gw-rpl-{index}"] = (machine.url, machine.token_file)
            slurm = LocalProvider(home_of(local_db), http)._slurm(local_spec)
            actions = SlurmActions(slurm.adapter())

            def place(name: str):
                return next(n for n in slurm.adapter().nodes().nodes if n.name == name)

            spec = parse_description(runpod_spec(name="rpl", nodes=2))
            assert up(spec, db, runtime=runtime).problems == ()  # burned in through the proxy
            job = actions.submit("#!/bin/sh\nsleep 60\n", SubmitOptions(
                nodelist=("rpl-node2",), time="5", output="/dev/null"))
            wait_until("the job runs", lambda: place("rpl-node2").state in ("allocated",
                                                                              "mixed"))
            with pytest.raises(ConflictError, match=rf"job\(s\) {job} run on it; not "
                                                    r"replaced \(the drain is undone\)"):
                replace_node("rpl", "rpl-node2", db, runtime=runtime)
            assert "DRAIN" not in place("rpl-node2").flags
            assert fake_runpod.calls["deletePod"] == 0

            actions.cancel(job)
            wait_until("the node is free", lambda: place("rpl-node2").state == "idle")
            old = pod_named(fake_runpod, "gw-rpl-2")["id"]
            seen: list[str] = []
            report = replace_node("rpl", "rpl-node2", db, seen.append, runtime)
            assert report.problems == () and report.ready, report.problems
            assert pod_named(fake_runpod, "gw-rpl-2")["id"] != old
            assert "burn-in: quick checks on rpl-node2" in seen, seen
            assert "rpl-node2: burn-in passed; resuming it in Slurm" in seen
            assert "DRAIN" not in place("rpl-node2").flags  # drained for it, resumed after
            assert [r.trigger for r in CheckStore(db).runs("rpl-node2")] == ["burn-in"] * 2
            down("rpl", db, runtime=runtime)
            assert fake_runpod.live_pods() == []
            assert_contract_kept(fake_runpod)
        finally:
            down("rpl", local_db, runtime=local_rt)
            local_db.close()


@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="needs Slurm and root")
def test_local_replace_restarts_the_node_through_its_burn_in(db):
    spec = parse_description({"name": "rpk", "provider": "local", "nodes": 2,
                              "gpus_per_node": 1})
    with httpx.Client(timeout=10) as http:
        rt = Runtime(http=http, env={})
        try:
            before = {n.name: n.provider_id for n in up(spec, db, runtime=rt).nodes}
            seen: list[str] = []
            report = replace_node("rpk", "rpk-node2", db, seen.append, rt)
            assert report.problems == () and report.ready, report.problems
            after = {n.name: n.provider_id for n in report.nodes}
            assert after["rpk-node2"] != before["rpk-node2"]  # a new node daemon process
            assert after["rpk-node1"] == before["rpk-node1"]
            assert "rpk-node2: burn-in passed; resuming it in Slurm" in seen, seen
            slurm = LocalProvider(home_of(db), http)._slurm(spec)
            node = next(n for n in slurm.adapter().nodes().nodes if n.name == "rpk-node2")
            assert "DRAIN" not in node.flags, node
            assert [r.trigger for r in CheckStore(db).runs("rpk-node2")] == ["burn-in"] * 2
        finally:
            down("rpk", db, runtime=rt)


def test_cli_replace(fake_runpod, tmp_path, monkeypatch):
    monkeypatch.setenv("GPUWARDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNPOD_API_KEY", fake_runpod.api_key)
    original = lifecycle.Runtime
    monkeypatch.setattr(lifecycle, "Runtime", lambda **kw: original(
        runpod_base_url=fake_runpod.url, runpod_node_url=fake_runpod.node_url(),
        runpod_poll_s=0.1, **kw))
    path = tmp_path / "c.yaml"
    path.write_text("name: cli\nprovider: runpod\nnodes: 2\ngpu_type: NVIDIA L4\nslurm: false\n"
                    "runpod: {install: {image: ghcr.io/example/gpuwarden-node:0.1.0}}\n")
    runner = CliRunner()
    assert runner.invoke(app, ["up", str(path)]).exit_code == 0
    old = pod_named(fake_runpod, "gw-cli-2")["id"]
    result = runner.invoke(app, ["replace", "cli-node2"])  # its cluster found by the name
    assert result.exit_code == 0, result.output
    new = pod_named(fake_runpod, "gw-cli-2")["id"]
    assert new != old and new in result.output and f"replaced {old} with {new}" in result.output
    result = runner.invoke(app, ["replace", "cli-node9", "--cluster", "cli"])
    assert "'cli-node9' is not a node of cluster cli" in str(result.exception)
    result = runner.invoke(app, ["replace", "nope"])
    assert "'nope' is not a node of any cluster" in str(result.exception)
    assert runner.invoke(app, ["down", "cli"]).exit_code == 0
    assert fake_runpod.live_pods() == []


def test_a_failed_check_replaces_the_pod_under_the_replace_policy(fake_runpod, runtime, db):
    """``checks.replace: auto``: a node whose check fails gets a ``checks:replace`` action,
    approved at once, which the watchdog runs beside its cycles (re-checked first: the last
    run still failed) through ``replace_node``; ``dry-run`` only records it; a node gpuwarden
    cannot replace (static, the Slurm controller) gets none."""
    import asyncio
    import time
    from types import SimpleNamespace

    from gpuwarden.checks import CheckResult
    from gpuwarden.config import ChecksConfig, ServeConfig
    from gpuwarden.services.executor import ControlPlaneExecutor
    from gpuwarden.watchdog.actions import Policies
    from gpuwarden.watchdog.engine import Watchdog
    from gpuwarden.watchdog.health import check_alerts

    up(parse_description(runpod_spec(nodes=2, slurm=False)), db, runtime=runtime)
    assert "static provider" in lifecycle.cannot_replace(static_spec(), "box1")
    assert "Slurm controller" in lifecycle.cannot_replace(
        parse_description(runpod_spec(nodes=2)), "dev-node1")
    assert lifecycle.replaceable_nodes(db) == {"dev-node1", "dev-node2"}  # no Slurm here
    old = pod_named(fake_runpod, "gw-dev-2")
    book = CheckStore(db)
    slow = CheckResult("clocks_idle", "quick", "fail", "GPU 0: hw_slowdown", "no throttle")

    def fail(node: str) -> None:
        book.record(node, "quick", "on-demand", [slow])

    fail("dev-node2")
    opened = check_alerts(db, book, ChecksConfig(replace="dry-run"), time.time, {})
    [dry] = [opened.policies.get(i) for i in opened.proposed]
    assert (dry.policy, dry.action, dry.target, dry.state) == (
        "checks:replace", "replace_node", "dev-node2", "dry-run")

    book.record("dev-node2", "quick", "on-demand", [])  # passes: the alert resolves
    check_alerts(db, book, ChecksConfig(), time.time, {})
    fail("dev-node2")
    opened = check_alerts(db, book, ChecksConfig(replace="auto"), time.time, {})
    [action] = [opened.policies.get(i) for i in opened.proposed]
    assert action.state == "approved" and action.target == "dev-node2"

    cp = SimpleNamespace(inventory=Inventory(db), db=db, clock=time.time)
    watchdog = Watchdog(db, ServeConfig.model_validate({"checks": {"replace": "auto"}}),
                        lambda: {}, executor=ControlPlaneExecutor(cp, runtime=runtime))

    async def cycle_and_wait() -> None:
        await watchdog.cycle()
        assert watchdog._replacing is not None  # started beside the cycle, not inside it
        await watchdog._replacing

    asyncio.run(cycle_and_wait())
    done = Policies(db, [], watchdog.alerts, AuditLog(db)).get(action.id)
    assert done.state == "executed", done.result
    new = pod_named(fake_runpod, "gw-dev-2")
    assert new["id"] != old["id"] and len(fake_runpod.live_pods()) == 2  # no orphan
    # audited twice: the action (its id and result) and the replacement (old and new pod)
    [(by_policy, _)] = [(e["detail"], e["actor"]) for e in AuditLog(db).list()
                        if e["action"] == "replace_node" and e["outcome"] == "executed"
                        and "action_id" in e["detail"]]
    assert by_policy["action_id"] == action.id
    [(target, _, detail)] = [r for r in replaced(db) if r[1] == "executed"
                                   and "old" in r[2]]
    assert (target, detail["old"], detail["new"]) == ("dev-node2", old["id"], new["id"])

    # re-checked just before it acts: a node whose last run passed is not replaced
    executor = ControlPlaneExecutor(cp, runtime=runtime)
    book.record("dev-node2", "quick", "on-demand", [])
    with pytest.raises(ConflictError, match="passed; not replaced"):
        asyncio.run(executor.replace_node("dev-node2", "test"))
    assert pod_named(fake_runpod, "gw-dev-2")["id"] == new["id"]
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)
