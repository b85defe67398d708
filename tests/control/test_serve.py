"""A real `gpuwarden serve` scraping real sim node daemons (all subprocesses)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import free_port, stop

pytestmark = pytest.mark.slow


def config_file(tmp_path, nodes, interval=1.0):
    path = tmp_path / "gpuwarden.yaml"
    path.write_text(yaml.safe_dump({"cluster": "test", "scrape": {"interval": interval,
                                                                 "timeout": 1.0},
                                    "nodes": nodes}))
    return path


@pytest.fixture
def fleet(daemon_factory, tmp_path):
    """Two frozen nodes (one poll, then none: their snapshots never change) and a live one."""
    token = tmp_path / "n1.token"
    token.write_text("node-secret-0123456789abcdef\n")
    token.chmod(0o600)
    n1 = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "4", "--sim-profile",
                         "0=train,1=inference", "--interval", "3600", "--hostname", "n1",
                         "--token-file", str(token)], token="node-secret-0123456789abcdef")
    n2 = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                         "--interval", "3600", "--hostname", "n2", "--sim-model", "a100"])
    n3 = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                         "--interval", "0.5", "--hostname", "n3", "--sim-profile", "train"])
    nodes = [
        {"name": "n1", "url": n1.url, "token_file": str(token), "cost_per_hour": 10.0},
        {"name": "n2", "url": n2.url, "cost_per_hour": 4.0},
        {"name": "n3", "url": n3.url, "cost_per_hour": 2.0},
    ]
    return {"n1": n1, "n2": n2, "n3": n3}, nodes


def test_api_equals_the_nodes_own_snapshots(fleet, tmp_path, serve_factory):
    daemons, nodes = fleet
    serve = serve_factory(config_file(tmp_path, nodes[:2]), tmp_path / "home")
    assert serve.admin.startswith("gw_")
    serve.wait(lambda: serve.get("/api/v1/overview").json()["nodes"]["up"] == 2, what="2 up")
    snaps = {name: daemons[name].get("/api/v1/snapshot").json() for name in ("n1", "n2")}
    for name, snap in snaps.items():
        detail = serve.get(f"/api/v1/nodes/{name}").json()
        assert detail["up"] and detail["hostname"] == name
        assert [g["uuid"] for g in detail["gpu_list"]] == [g["uuid"] for g in snap["gpus"]]
        for gpu in snap["gpus"]:
            api = serve.get(f"/api/v1/gpus/{name}/{gpu['index']}").json()
            assert api["fields"] == gpu["fields"]
            assert api["utilization"] == gpu["fields"]["DCGM_FI_DEV_GPU_UTIL"]
            assert api["simulated"] is True
    overview = serve.get("/api/v1/overview").json()
    all_gpus = [g for s in snaps.values() for g in s["gpus"]]
    assert overview["gpus"]["total"] == 6
    assert overview["gpus"]["busy"] == sum(
        g["fields"]["DCGM_FI_DEV_GPU_UTIL"] >= 5 for g in all_gpus)
    assert overview["gpus"]["idle"] == 6 - overview["gpus"]["busy"]
    assert overview["power_w"] == pytest.approx(
        sum(g["fields"]["DCGM_FI_DEV_POWER_USAGE"] for g in all_gpus))
    assert overview["cost_per_hour"] == 14.0
    idle_cost = sum(10.0 / 4 for g in snaps["n1"]["gpus"]
                    if g["fields"]["DCGM_FI_DEV_GPU_UTIL"] < 5) + 4.0
    assert overview["waste_per_hour"] == pytest.approx(idle_cost)
    # history lands in the store and comes back through the API
    series = serve.wait(lambda: serve.get(
        '/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL{node="n1",gpu="0"}').json()["series"],
        what="stored samples")
    assert series[0]["points"][0][1] == snaps["n1"]["gpus"][0]["fields"]["DCGM_FI_DEV_GPU_UTIL"]
    # the series are listed as Prometheus' /api/v1/series lists them: two selectors, each
    # series once, the same label sets the query returns
    listed = serve.get("/api/v1/series", params=[
        ("match[]", 'DCGM_FI_DEV_GPU_UTIL{node="n1"}'),
        ("match[]", 'DCGM_FI_DEV_GPU_UTIL{node=~"n1|n2",gpu="0"}')]).json()
    assert listed["truncated"] is False
    queried = serve.get('/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL{node=~"n1|n2"}').json()
    n1_and_n2_gpu0 = sorted(
        (x["labels"]["node"], x["labels"]["gpu"]) for x in queried["series"]
        if x["labels"]["node"] == "n1" or x["labels"]["gpu"] == "0")
    assert sorted((x["labels"]["node"], x["labels"]["gpu"]) for x in listed["series"]) == \
        n1_and_n2_gpu0
    assert {x["metric"] for x in listed["series"]} == {"DCGM_FI_DEV_GPU_UTIL"}
    assert serve.get("/api/v1/series", params={"match[]": "DCGM_FI_DEV_GPU_UTIL",
                                               "limit": 1}).json()["truncated"] is True
    bad = serve.get("/api/v1/series", params={"match[]": "DCGM{"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "match[]", bad.text
    history = serve.get("/api/v1/gpus/n1/0/history?range=1h").json()
    assert any(v == snaps["n1"]["gpus"][0]["fields"]["DCGM_FI_DEV_GPU_UTIL"]
               for _, v in history["series"]["DCGM_FI_DEV_GPU_UTIL"])


def test_dead_node_is_down_within_two_intervals_others_stay_fresh(fleet, tmp_path,
                                                                 serve_factory):
    daemons, nodes = fleet
    serve = serve_factory(config_file(tmp_path, nodes, interval=1.0), tmp_path / "home")
    serve.wait(lambda: serve.get("/api/v1/overview").json()["nodes"]["up"] == 3, what="3 up")
    stop(daemons["n3"].proc, signal.SIGKILL)
    killed_at = time.time()
    serve.wait(lambda: not {n["name"]: n for n in serve.get("/api/v1/nodes").json()}["n3"]["up"],
               timeout=2 * 1.0 + 2, what="n3 down")
    assert time.time() - killed_at <= 2 * 1.0 + 1.5
    nodes_now = {n["name"]: n for n in serve.get("/api/v1/nodes").json()}
    assert nodes_now["n1"]["up"] and nodes_now["n2"]["up"]
    assert time.time() - nodes_now["n1"]["last_success"] < 2.5
    overview = serve.get("/api/v1/overview").json()
    assert overview["nodes"] == {"total": 3, "up": 2, "down": 1}
    assert overview["gpus"]["down"] == 2  # n3's GPUs, known from its last snapshot
    # the store gets the down sample with the next batch (flushed every second); on a busy
    # machine the series may not be stored yet at the first look
    def up_stored() -> bool:
        found = serve.get('/api/v1/query?selector=up{node="n3"}').json()["series"]
        return bool(found) and found[0]["points"][-1][1] == 0

    serve.wait(up_stored, timeout=5, what="up 0 stored")


def test_garbage_is_counted_and_never_stored(fleet, tmp_path, serve_factory, garbage_node):
    _, nodes = fleet
    serve = serve_factory(config_file(tmp_path, [nodes[1], {"name": "junk", "url": garbage_node}]),
                          tmp_path / "home")
    junk = serve.wait(lambda: next((n for n in serve.get("/api/v1/nodes").json()
                                    if n["name"] == "junk" and n["error"]), None),
                      what="junk scraped")
    assert not junk["up"] and junk["error"].startswith("bad data: ") and junk["bad_data"]
    assert serve.get('/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL{node="junk"}').json()[
        "series"] == []
    serve.wait(lambda: serve.get("/api/v1/nodes/n2").json()["up"], what="n2 up beside it")


def test_roles_and_bad_input(fleet, tmp_path, serve_factory):
    _, nodes = fleet
    home = tmp_path / "home"
    serve = serve_factory(config_file(tmp_path, nodes[1:2]), home)

    def token(role):
        out = subprocess.run([sys.executable, "-m", "gpuwarden", "token", "create", "--role", role],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "GPUWARDEN_HOME": str(home)})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    viewer, operator = token("viewer"), token("operator")
    assert serve.get("/api/v1/overview", token="").status_code == 401
    assert serve.get("/api/v1/overview", token="gw_wrong").status_code == 401
    assert serve.get("/api/v1/overview", token=viewer).status_code == 200
    assert serve.get("/api/v1/tokens", token=viewer).status_code == 403
    assert serve.get("/api/v1/tokens", token=operator).status_code == 403
    listed = serve.get("/api/v1/tokens").json()
    assert {t["role"] for t in listed} == {"admin", "viewer", "operator"}
    assert all("token" not in t for t in listed)
    assert serve.get("/api/v1/me", token=operator).json() == {"name": "operator token",
                                                            "role": "operator"}
    bad = serve.get("/api/v1/gpus/n2/0/history?range=2w&step=-1", token=viewer)
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"range", "step"}
    assert serve.get("/api/v1/gpus?state=sleepy", token=viewer).status_code == 422
    assert serve.get("/api/v1/gpus/nope/0", token=viewer).status_code == 404
    # secrets stay out of what serve prints, but for the one-time admin token
    assert "node-secret" not in "\n".join(serve.lines)
    out = subprocess.run([sys.executable, "-m", "gpuwarden", "token", "create", "--role", "root"],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "GPUWARDEN_HOME": str(home)})
    assert out.returncode != 0 and "--role 'root'" in out.stderr and "Traceback" not in out.stderr


def test_kill_9_mid_ingest_then_restart_keeps_data(fleet, tmp_path, serve_factory):
    _, nodes = fleet
    home = tmp_path / "home"
    cfg = config_file(tmp_path, nodes, interval=0.5)
    port = free_port()
    serve = serve_factory(cfg, home, port)
    serve.wait(lambda: serve.get("/api/v1/overview").json()["nodes"]["up"] == 3, what="3 up")
    stored = {"selector": 'DCGM_FI_DEV_GPU_UTIL{node="n3",gpu="0"}', "start": int(time.time()),
              "end": int(time.time()) + 60, "step": 1}
    serve.wait(lambda: (s := serve.get("/api/v1/query", token=serve.admin, params={
        **stored, "end": int(time.time()) + 1}).json()["series"]) and len(s[0]["points"]) >= 2,
        timeout=20, what="two stored points of n3's GPU 0")  # then kill it mid-ingest
    t_kill = time.time()
    stop(serve.proc, signal.SIGKILL)
    for db in home.glob("*.db"):
        check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
        assert check == "ok", db
    again = serve_factory(cfg, home, free_port())
    assert not again.admin  # the admin token is made once, on the first start
    params = {"selector": 'DCGM_FI_DEV_GPU_UTIL{node="n3",gpu="0"}', "start": int(t_kill - 30),
              "end": int(t_kill + 1), "step": 1}
    points = again.get("/api/v1/query", token=serve.admin, params=params).json()["series"][0][
        "points"]
    assert len(points) >= 2 and all(p[0] <= t_kill + 1 for p in points)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_stops_quickly_with_an_event_stream_open(fleet, tmp_path, serve_factory, sig):
    """The web UI keeps /api/v1/stream open: a stop must not wait out the graceful timeout
    on it, and serve must withdraw its runtime file."""
    import threading

    import httpx

    serve = serve_factory(config_file(tmp_path, fleet[1]), tmp_path / "home")
    events: list[str] = []
    done = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", serve.url + "/api/v1/stream", timeout=30,
                          headers={"Authorization": f"Bearer {serve.admin}"}) as r:
            for line in r.iter_lines():
                if line.startswith("event:"):
                    events.append(line)
        done.set()

    threading.Thread(target=listen, daemon=True).start()
    serve.wait(lambda: events, what="the stream's first event")
    assert (tmp_path / "home" / "control-plane.json").exists()
    began = time.monotonic()
    serve.proc.send_signal(sig)
    serve.proc.wait(timeout=15)
    took = time.monotonic() - began
    assert serve.proc.returncode == 0 and took < 3.0, (took, serve.lines[-5:])
    assert done.wait(5), "the stream did not end"
    assert not (tmp_path / "home" / "control-plane.json").exists()
