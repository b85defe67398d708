"""One node stopped and started again (the provider half of pod autostop), against the fake
RunPod server (validated against the real spec); the static provider's refusal; the cluster
file's ``autostop``.  The local provider's stop/start runs in test_local_lifecycle.py."""

from __future__ import annotations

import httpx
import pytest
from rich.console import Console

from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.providers import (
    STOPPED,
    ProviderError,
    cannot_stop,
    down,
    parse_description,
    start_node,
    status,
    stop_node,
    up,
)
from gpuwarden.providers.base import Workspace, no_progress
from gpuwarden.providers.cli import render_report
from gpuwarden.providers.registry import home_of, save_description
from gpuwarden.providers.runpod import RunPodClient, load_api_key
from gpuwarden.providers.static import StaticProvider
from gpuwarden.state.inventory import Inventory
from tests.providers.conftest import runpod_spec
from tests.providers.test_runpod_lifecycle import assert_contract_kept
from tests.waiting import wait_until


def billing(fake, runtime) -> dict[str, dict]:
    client = RunPodClient(runtime.http, load_api_key(runtime.env), fake.url)
    return {r["podId"]: r for r in client.pod_billing()["records"]}


def pod_named(fake, name: str) -> dict:
    return next(p for p in fake.live_pods() if p["name"] == name)


def test_stop_reaches_exactly_that_pod_status_shows_it_at_0_and_up_starts_it(
        fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(nodes=3))
    up(spec, db, runtime=runtime)
    victim = pod_named(fake_runpod, "gw-dev-2")

    record = stop_node("dev", "dev-node2", db, runtime=runtime)
    assert (record.name, record.status, record.cost_per_hour) == ("dev-node2", STOPPED, 0.0)
    assert fake_runpod.actions == [(victim["id"], "stop")]  # that pod, and only it
    assert {p["name"]: p["status"] for p in fake_runpod.live_pods()} == {
        "gw-dev-1": "RUNNING", "gw-dev-2": "EXITED", "gw-dev-3": "RUNNING"}

    st = status("dev", db, runtime)
    assert [(n.status, n.cost_per_hour) for n in st.nodes] == [
        ("RUNNING", 2 * 0.69), (STOPPED, 0.0), ("RUNNING", 2 * 0.69)]
    assert st.cost_per_hour == pytest.approx(2 * 2 * 0.69) and not st.problems
    console = Console(width=200, record=True)
    console.print(render_report(st))
    row = next(line for line in console.export_text().splitlines() if "dev-node2" in line)
    assert "STOPPED" in row and " 0.00 " in row
    # the stopped node stays registered, at $0/hr; the others keep their price
    inv = {n.name: n.cost_per_hour for n in Inventory(db).nodes()}
    assert inv == {"dev-node1": 2 * 0.69, "dev-node2": 0.0, "dev-node3": 2 * 0.69}

    # its GPU cost no longer accrues while the running pods' does
    before = billing(fake_runpod, runtime)
    ctl = pod_named(fake_runpod, "gw-dev-1")["id"]
    wait_until("the running pods to accrue", lambda: billing(fake_runpod, runtime)[ctl][
        "gpuAmount"] > before[ctl]["gpuAmount"], timeout=10, interval=0.02)
    assert billing(fake_runpod, runtime)[victim["id"]]["gpuAmount"] == before[victim["id"]][
        "gpuAmount"]

    assert stop_node("dev", "dev-node2", db, runtime=runtime).status == STOPPED
    assert len(fake_runpod.actions) == 1  # already stopped: nothing sent

    report = up(spec, db, runtime=runtime)  # starts it again, creates nothing
    assert report.ready and fake_runpod.calls["createPod"] == 3
    assert fake_runpod.actions[1:] == [(victim["id"], "start")]
    assert pod_named(fake_runpod, "gw-dev-2")["id"] == victim["id"]  # same pod, same disk
    assert Inventory(db).nodes()[1].cost_per_hour == 2 * 0.69
    up(spec, db, runtime=runtime)
    assert len(fake_runpod.actions) == 2  # idempotent
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_start_node_and_the_controller_goes_last(fake_runpod, runtime, db):
    up(parse_description(runpod_spec(nodes=2)), db, runtime=runtime)
    with pytest.raises(ConflictError, match=r"dev-node1 is the Slurm controller and "
                                            r"dev-node2 still run on it; stop those first"):
        stop_node("dev", "dev-node1", db, runtime=runtime)
    with pytest.raises(NotFoundError, match=r"'dev-node9' is not a node of cluster dev"):
        stop_node("dev", "dev-node9", db, runtime=runtime)
    stop_node("dev", "dev-node2", db, runtime=runtime)
    stop_node("dev", "dev-node1", db, runtime=runtime)
    assert [p["status"] for p in fake_runpod.live_pods()] == ["EXITED", "EXITED"]
    assert status("dev", db, runtime).cost_per_hour == 0
    with pytest.raises(ConflictError, match=r"controller dev-node1 is STOPPED; start it first"):
        start_node("dev", "dev-node2", db, runtime=runtime)

    ctl = start_node("dev", "dev-node1", db, runtime=runtime)
    assert (ctl.status, ctl.healthy, ctl.cost_per_hour) == ("RUNNING", True, 2 * 0.69)
    worker = start_node("dev", "dev-node2", db, runtime=runtime)
    assert worker.status == "RUNNING" and worker.healthy
    assert start_node("dev", "dev-node2", db, runtime=runtime).healthy  # running: no action
    assert [a for _, a in fake_runpod.actions] == ["stop", "stop", "start", "start"]
    assert status("dev", db, runtime).ready
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_down_deletes_a_stopped_pod_whose_disk_still_bills(fake_runpod, runtime, db):
    fake_runpod.disk_per_gb_hour = 1.0  # to see it move in milliseconds
    up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    pod = pod_named(fake_runpod, "gw-dev-1")["id"]
    stop_node("dev", "dev-node1", db, runtime=runtime)
    first = billing(fake_runpod, runtime)[pod]
    later = wait_until("the stopped pod's disk to bill", timeout=10, interval=0.02, check=lambda: (
        r := billing(fake_runpod, runtime)[pod])["diskAmount"] > first["diskAmount"] and r)
    assert later["gpuAmount"] == first["gpuAmount"]

    result = down("dev", db, runtime=runtime)
    assert result.terminated == ("gw-dev-1",) and fake_runpod.live_pods() == []
    gone = billing(fake_runpod, runtime)[pod]
    ended = fake_runpod.clock()
    wait_until("time to pass", lambda: fake_runpod.clock() > ended + 0.01, timeout=10,
               interval=0.02)
    assert billing(fake_runpod, runtime)[pod] == gone  # nothing left billing
    assert Inventory(db).nodes() == []
    assert_contract_kept(fake_runpod)


def test_terminate_removes_the_pod_and_up_creates_it_anew(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(nodes=2))
    up(spec, db, runtime=runtime)
    old = pod_named(fake_runpod, "gw-dev-2")["id"]
    record = stop_node("dev", "dev-node2", db, runtime=runtime, action="terminate")
    assert (record.status, record.cost_per_hour) == ("TERMINATED", 0.0)
    assert [p["name"] for p in fake_runpod.live_pods()] == ["gw-dev-1"]
    assert fake_runpod.calls["deletePod"] == 1 and not fake_runpod.actions
    assert [n.name for n in Inventory(db).nodes()] == ["dev-node1"]
    assert "1 node(s) missing" in status("dev", db, runtime).problems[0]
    up(spec, db, runtime=runtime)
    assert pod_named(fake_runpod, "gw-dev-2")["id"] != old
    assert len(Inventory(db).nodes()) == 2
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_a_stop_retried_after_it_took_effect_is_fine(fake_runpod, runtime, db):
    # the stop happens but answers 500; the client sends it again and gets 409 (an EXITED
    # pod cannot stop): the provider looks, sees EXITED, and is satisfied
    up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    fake_runpod.inject("podAction", 500, commit=True)
    assert stop_node("dev", "dev-node1", db, runtime=runtime).status == STOPPED
    assert [s for op, s in fake_runpod.statuses if op == "podAction"] == [500, 409]
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_fake_refuses_what_the_spec_refuses(fake_runpod, runtime, db):
    up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    pod = pod_named(fake_runpod, "gw-dev-1")["id"]
    headers = {"Authorization": f"Bearer {fake_runpod.api_key}"}
    url = f"{fake_runpod.url}/v2/pods/{pod}/action"
    assert httpx.post(url, json={"action": "pause"}, headers=headers).status_code == 400
    assert httpx.post(url, json={"action": "start"}, headers=headers).status_code == 409
    assert httpx.post(url, json={"action": "stop", "now": True},
                      headers=headers).status_code == 400
    assert len(fake_runpod.invalid_requests) == 2 and not fake_runpod.invalid_responses
    down("dev", db, runtime=runtime)


def static_spec():
    return parse_description({"name": "lab", "provider": "static", "machines": [
        {"name": "box1", "address": "http://127.0.0.1:9", "role": "controller"}]})


def test_static_cannot_stop_and_says_what_to_do(db):
    spec = static_spec()
    with httpx.Client() as http, pytest.raises(ProviderError) as exc:
        StaticProvider(http).stop(spec, "box1", no_progress)
    assert str(exc.value).startswith("node box1: the static provider cannot stop machines")
    assert "set autostop only for local or runpod clusters" in str(exc.value)
    save_description(Workspace(home_of(db), "lab"), spec)
    with pytest.raises(GpuwardenError, match="static provider cannot stop machines"):
        stop_node("lab", "box1", db)
    with pytest.raises(GpuwardenError, match="static provider cannot stop machines"):
        start_node("lab", "box1", db)


@pytest.mark.parametrize(("data", "message"), [
    ({"provider": "static", "machines": [{"name": "a", "address": "http://a:9400"}]},
     "autostop: the static provider cannot stop machines"),
    ({"provider": "runpod", "gpu_type": "g", "nodes": 2, "runpod": {"mode": "cluster"}},
     "autostop: runpod.mode cluster: RunPod manages an Instant Cluster's pods"),
])
def test_autostop_refused_at_load_where_nothing_can_stop(data, message):
    with pytest.raises(GpuwardenError, match=message):
        parse_description({"name": "x", **data, "autostop": {"idle_minutes": 30}})
    assert cannot_stop(parse_description({"name": "x", **data})) is not None


def test_a_static_cluster_saved_with_autostop_before_the_check_still_goes_down(db):
    from gpuwarden.providers.spec import ClusterDescription

    data = static_spec().model_dump(mode="json") | {"autostop": {"idle_minutes": 60}}
    save_description(Workspace(home_of(db), "lab"), ClusterDescription.model_validate(data))
    assert down("lab", db).name == "lab"


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 1800), ("30", 1800), (0.5, 30), ("45s", 45), ("10m", 600), ("2h", 7200)])
def test_autostop_idle_minutes_takes_minutes_or_a_duration(value, seconds):
    spec = parse_description({"name": "x", "provider": "local",
                              "autostop": {"idle_minutes": value}})
    assert spec.autostop is not None
    assert (spec.autostop.idle_s, spec.autostop.action) == (seconds, "stop")
    again = parse_description(spec.model_dump(mode="json"))  # as `status`/`down` reload it
    assert again.autostop == spec.autostop
    assert cannot_stop(spec) is None


@pytest.mark.parametrize(("autostop", "message"), [
    ({"idle_minutes": 0}, "autostop.idle_minutes: Input should be greater than 0"),
    ({"idle_minutes": "0s"}, "autostop.idle_minutes: Input should be greater than 0"),
    ({"idle_minutes": "soon"}, "autostop.idle_minutes: 'soon' is not a duration"),
    ({"idle_minutes": "8d"}, "autostop.idle_minutes: Input should be less than or equal"),
    ({"action": "pause"}, "autostop.action: Input should be 'stop' or 'terminate'"),
])
def test_autostop_errors_name_the_field(autostop, message):
    with pytest.raises(GpuwardenError, match=message):
        parse_description({"name": "x", "provider": "local", "autostop": autostop})
