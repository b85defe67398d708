"""up -> status -> down against the fake RunPod server (validated against the real spec)."""

from __future__ import annotations

import pytest

from gpuwarden.errors import GpuwardenError
from gpuwarden.providers import down, parse_description, status, up
from gpuwarden.state.inventory import Inventory
from tests.providers.conftest import runpod_spec


def assert_contract_kept(server) -> None:
    assert not server.invalid_requests, server.invalid_requests
    assert not server.invalid_responses, server.invalid_responses


def test_up_status_down(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(budget_per_hour=10))
    seen: list[str] = []
    report = up(spec, db, seen.append, runtime)
    assert report.ready and len(report.nodes) == 3
    assert report.cost_per_hour == pytest.approx(3 * 2 * 0.69)
    pods = fake_runpod.live_pods()
    assert sorted(p["name"] for p in pods) == ["gw-dev-1", "gw-dev-2", "gw-dev-3"]
    ctl = next(p for p in pods if p["name"] == "gw-dev-1")
    worker = next(p for p in pods if p["name"] == "gw-dev-2")
    assert worker["env"]["GPUWARDEN_CONTROLLER_ADDR"] == f"{ctl['id']}.runpod.internal"
    assert all(p["globalNetworking"]["enabled"] for p in pods)
    inv = {n.name: n for n in Inventory(db).nodes()}
    assert set(inv) == {"dev-node1", "dev-node2", "dev-node3"}
    assert inv["dev-node1"].role == "controller" and inv["dev-node1"].source == "provider"
    assert inv["dev-node1"].token_file is not None and inv["dev-node1"].token_file.exists()
    assert any("creating pod gw-dev-1" in s for s in seen)

    st = status("dev", db, runtime)
    assert [n.status for n in st.nodes] == ["RUNNING"] * 3
    assert st.cost_so_far is not None and st.cost_so_far >= 0 and not st.problems

    result = down("dev", db, runtime=runtime)
    assert sorted(result.terminated) == ["gw-dev-1", "gw-dev-2", "gw-dev-3"]
    assert fake_runpod.live_pods() == [] and Inventory(db).nodes() == []
    with pytest.raises(GpuwardenError, match="no cluster named 'dev'"):
        status("dev", db, runtime)
    assert_contract_kept(fake_runpod)


def test_up_twice_creates_nothing_new(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(nodes=2))
    up(spec, db, runtime=runtime)
    up(spec, db, runtime=runtime)
    assert fake_runpod.calls["createPod"] == 2 and len(fake_runpod.live_pods()) == 2
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_5xx_on_create_never_duplicates_a_pod(fake_runpod, runtime, db):
    # the first create succeeds on the server but answers 500; the second fails outright
    fake_runpod.inject("createPod", 500, commit=True)
    fake_runpod.inject("createPod", 503)
    spec = parse_description(runpod_spec(nodes=2))
    up(spec, db, runtime=runtime)
    names = sorted(p["name"] for p in fake_runpod.live_pods())
    assert names == ["gw-dev-1", "gw-dev-2"]  # no duplicate of gw-dev-1
    assert ("createPod", 500) in fake_runpod.statuses
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_rate_limits_and_5xx_on_reads_are_retried(fake_runpod, runtime, db):
    fake_runpod.inject("listPods", 429, times=2, retry_after=1)
    fake_runpod.inject("listGpuTypes", 502)
    spec = parse_description(runpod_spec(nodes=1))
    up(spec, db, runtime=runtime)
    assert ("listPods", 429) in fake_runpod.statuses
    assert ("listGpuTypes", 502) in fake_runpod.statuses
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


def test_no_capacity_says_so_and_lists_alternatives(fake_runpod, runtime, db):
    fake_runpod.capacity["NVIDIA GeForce RTX 4090"] = 0
    with pytest.raises(GpuwardenError) as exc:
        up(parse_description(runpod_spec()), db, runtime=runtime)
    text = str(exc.value)
    assert "no capacity" in text and "NVIDIA L4" in text and "\n" not in text
    assert fake_runpod.calls["createPod"] == 0


def test_capacity_gone_between_catalog_and_create(fake_runpod, runtime, db):
    fake_runpod.capacity["NVIDIA GeForce RTX 4090"] = 1  # one pod fits, the second does not
    with pytest.raises(GpuwardenError, match=r"no capacity.*available now"):
        up(parse_description(runpod_spec(nodes=2)), db, runtime=runtime)
    down("dev", db, runtime=runtime)
    assert fake_runpod.live_pods() == []
    assert_contract_kept(fake_runpod)


def test_budget_cap_refused_before_creating_anything(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(budget_per_hour=1.0))
    with pytest.raises(GpuwardenError, match=r"budget_per_hour: .*\$4\.14/hr.*\$1\.00/hr"):
        up(spec, db, runtime=runtime)
    assert fake_runpod.calls["createPod"] == 0


class Crash(Exception):
    pass


def test_crash_mid_up_then_down_leaves_nothing(fake_runpod, runtime, db):
    def progress(text: str) -> None:
        if text.startswith("creating pod gw-dev-2"):
            raise Crash

    with pytest.raises(Crash):
        up(parse_description(runpod_spec()), db, progress, runtime)
    assert [p["name"] for p in fake_runpod.live_pods()] == ["gw-dev-1"]
    # the pod is an orphan: no inventory row, but the description was saved first
    assert Inventory(db).nodes() == []
    down("dev", db, runtime=runtime)
    assert fake_runpod.live_pods() == []
    assert_contract_kept(fake_runpod)


def test_interrupted_up_resumes(fake_runpod, runtime, db):
    def progress(text: str) -> None:
        if text.startswith("creating pod gw-dev-3"):
            raise Crash

    spec = parse_description(runpod_spec())
    with pytest.raises(Crash):
        up(spec, db, progress, runtime)
    up(spec, db, runtime=runtime)
    assert sorted(p["name"] for p in fake_runpod.live_pods()) == ["gw-dev-1", "gw-dev-2",
                                                                  "gw-dev-3"]
    assert fake_runpod.calls["createPod"] == 3
    down("dev", db, runtime=runtime)


def test_pod_back_with_zero_gpus_is_reported(fake_runpod, runtime, db):
    up(parse_description(runpod_spec(nodes=2)), db, runtime=runtime)
    victim = next(p for p in fake_runpod.live_pods() if p["name"] == "gw-dev-2")
    fake_runpod.set_gpus(victim["id"], 0)
    st = status("dev", db, runtime)
    assert any("gw-dev-2 is running with 0 of 2 GPUs" in p for p in st.problems)
    with pytest.raises(GpuwardenError, match="0 of 2 GPUs"):
        up(parse_description(runpod_spec(nodes=2)), db, runtime=runtime)
    down("dev", db, runtime=runtime)


def test_instant_cluster_mode(fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(runpod={"mode": "cluster"}))
    report = up(spec, db, runtime=runtime)
    assert report.ready and [n.index for n in report.nodes] == [1, 2, 3]
    up(spec, db, runtime=runtime)
    assert fake_runpod.calls["createCluster"] == 1
    down("dev", db, runtime=runtime)
    assert fake_runpod.live_pods() == [] and not fake_runpod.clusters
    assert_contract_kept(fake_runpod)


def test_bad_key_is_one_line_and_never_shown(fake_runpod, runtime, db):
    runtime.env = {"RUNPOD_API_KEY": "sk-wrong-secret"}
    with pytest.raises(GpuwardenError) as exc:
        up(parse_description(runpod_spec()), db, runtime=runtime)
    assert str(exc.value).startswith("RunPod 401 Unauthorized")
    assert "sk-wrong-secret" not in str(exc.value)


def test_missing_key_names_the_fix(runtime, db):
    runtime.env = {}
    with pytest.raises(GpuwardenError, match=r"set RUNPOD_API_KEY or runpod\.api_key_file"):
        up(parse_description(runpod_spec()), db, runtime=runtime)


def test_429_on_create_is_waited_out_and_sent_again(fake_runpod, runtime, db):
    fake_runpod.inject("createPod", 429, retry_after=1)
    up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    assert ("createPod", 429) in fake_runpod.statuses
    assert [p["name"] for p in fake_runpod.live_pods()] == ["gw-dev-1"]
    down("dev", db, runtime=runtime)


def test_polling_stays_inside_the_rate_limit(fake_runpod, runtime, db):
    fake_runpod.quota, fake_runpod.window_s = 4, 1
    up(parse_description(runpod_spec(nodes=2)), db, runtime=runtime)
    down("dev", db, runtime=runtime)
    assert fake_runpod.rate_limited == 0
