from __future__ import annotations

from starlette.testclient import TestClient

from gpuwarden.gpu.sim import SimSource
from gpuwarden.node.app import create_app
from gpuwarden.node.poller import GpuPoller


def make(token="s3cret", profiles=None):
    poller = GpuPoller(SimSource(2, "h100", profiles or {0: "train"}, seed=1),
                       hostname="n1", interval=5)
    poller.poll_once()
    return poller, TestClient(create_app(poller.latest, token=token))


def test_auth_on_everything_but_healthz():
    _, client = make()
    for path in ("/metrics", "/api/v1/snapshot"):
        r = client.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["status"] == 401 and "Bearer" in r.json()["detail"]
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "s3cret"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_token_never_echoed():
    _, client = make()
    for path in ("/metrics", "/api/v1/snapshot", "/healthz"):
        body = client.get(path, headers={"Authorization": "Bearer s3cret"}).text
        assert "s3cret" not in body


def test_snapshot_json_has_every_gpu_and_field():
    _, client = make()
    snap = client.get("/api/v1/snapshot", headers={"Authorization": "Bearer s3cret"}).json()
    assert snap["node"]["hostname"] == "n1" and snap["node"]["backend"] == "sim"
    assert [g["index"] for g in snap["gpus"]] == [0, 1]
    gpu = snap["gpus"][0]
    assert gpu["simulated"] is True and gpu["up"] is True
    assert gpu["fields"]["DCGM_FI_DEV_GPU_UTIL"] > 50
    assert set(gpu["clock_events"]) >= {"hw_thermal_slowdown", "sw_power_cap"}
    assert snap["health"] == {"state": "ok", "reason": None}
    assert snap["collector"]["polls_total"] == 1


def test_healthz_is_honest_about_a_lost_gpu():
    _, client = make(profiles={0: "train", 1: "lost"})
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded" and "1" in r.json()["reason"]


def test_healthz_says_stale_when_polls_stop():
    clock = [0.0]
    poller = GpuPoller(SimSource(1, seed=1, clock=lambda: clock[0] + 1e9), hostname="n",
                       interval=5)
    poller.poll_once()
    client = TestClient(create_app(poller.latest, token=None, clock=lambda: 1e9 + 120))
    r = client.get("/healthz")
    assert r.status_code == 503 and "no successful GPU poll" in r.json()["reason"]


def test_no_auth_app_serves_without_token():
    _, client = make(token=None)
    assert client.get("/metrics").status_code == 200


def test_metrics_follow_new_polls_through_the_render_cache():
    poller, client = make(token=None)
    first = client.get("/metrics").text
    assert client.get("/metrics").text == first  # same poll, same bytes
    polls_before = first.count("gpuwarden_collector_polls_total 1.0")
    poller.poll_once()
    second = client.get("/metrics").text
    assert polls_before == 1 and "gpuwarden_collector_polls_total 2.0" in second
