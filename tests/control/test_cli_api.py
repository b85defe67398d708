"""The CLI's control-plane commands (token, alerts, silence, ask) against a real `serve`
subprocess, found through its runtime file or GPUWARDEN_URL + GPUWARDEN_TOKEN."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

import httpx
import pytest
import yaml

from gpuwarden import runtime
from tests.conftest import free_port, stop

pytestmark = pytest.mark.slow


def gw(*args: str, home, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``gpuwarden ARGS`` with only GPUWARDEN_HOME set (plus ``env``), a wide terminal."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("GPUWARDEN_URL", "GPUWARDEN_TOKEN", "GPUWARDEN_CONFIG")}
    return subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**base, "GPUWARDEN_HOME": str(home), "COLUMNS": "250",
                               **(env or {})})


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def failed(result: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line of a command that must fail cleanly."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpuwarden: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def table_ids(stdout: str) -> list[int]:
    """The first column of a Rich table's rows."""
    return [int(m.group(1)) for m in re.finditer(r"^│ (\d+) +│", stdout, re.MULTILINE)]


def config(tmp_path, nodes=(), **watchdog) -> object:
    path = tmp_path / "gpuwarden.yaml"
    path.write_text(yaml.safe_dump({
        "cluster": "cli", "scrape": {"interval": 0.5, "timeout": 1.0}, "nodes": list(nodes),
        "watchdog": {"interval": 0.5, **watchdog}}))
    return path


def me(serve, token: str) -> httpx.Response:
    return httpx.get(serve.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                     timeout=10)


def test_serve_publishes_a_runtime_file_and_withdraws_it(serve_factory, tmp_path):
    home = tmp_path / "home"
    serve = serve_factory(config(tmp_path), home)
    info = runtime.read(home)
    assert info is not None and info.kind == "serve" and info.pid == serve.proc.pid
    assert info.url == serve.url
    assert stat.S_IMODE((home / runtime.FILENAME).stat().st_mode) == 0o600
    assert me(serve, info.token).json()["role"] == "admin"
    assert info.token != serve.admin  # the first-start token is still printed, and separate
    stop(serve.proc, signal.SIGINT)
    assert not (home / runtime.FILENAME).exists()

    # the next start replaces the local token: the old one is refused, they do not pile up
    again = serve_factory(config(tmp_path), home)
    fresh = runtime.read(home)
    assert fresh is not None and fresh.token != info.token
    assert me(again, info.token).status_code == 401
    assert me(again, fresh.token).json()["role"] == "admin"
    stop(again.proc, signal.SIGKILL)  # no clean exit: the file stays, with a dead pid
    third = serve_factory(config(tmp_path), home)
    names = [t["name"] for t in third.get("/api/v1/tokens", token=runtime.read(home).token
                                           ).json()]
    assert sum(n.startswith("local CLI") for n in names) == 1, names
    assert names.count("initial admin token") == 1
    assert me(third, fresh.token).status_code == 401


def test_token_create_list_revoke(serve_factory, tmp_path):
    # laid out like the demo's: the control plane keeps its state in $GPUWARDEN_HOME/demo
    home = tmp_path / "home"
    serve = serve_factory(config(tmp_path), home / "demo")
    created = ok(gw("token", "create", "--role", "operator", "--name", "ci", home=home))
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("gw_") and "shown once" in created.stderr
    assert me(serve, token).json() == {"name": "ci", "role": "operator"}

    listed = ok(gw("token", "list", home=home)).stdout
    api = serve.get("/api/v1/tokens").json()
    assert table_ids(listed) == [t["id"] for t in api]
    assert "ci" in listed and "operator" in listed and token not in listed
    [ci] = [t for t in api if t["name"] == "ci"]

    assert ok(gw("token", "revoke", str(ci["id"]), home=home)).stdout.strip() == \
        f"token {ci['id']} revoked"
    assert me(serve, token).status_code == 401
    [row] = [t for t in serve.get("/api/v1/tokens").json() if t["id"] == ci["id"]]
    assert row["revoked"]
    failed(gw("token", "revoke", str(ci["id"]), home=home), f"no active token with id {ci['id']}",
           "gpuwarden token list")
    failed(gw("token", "create", "--role", "root", home=home), "--role 'root'", "admin")
    # the revoked token, given explicitly, is refused with the way out
    failed(gw("alerts", home=home, env={"GPUWARDEN_TOKEN": token}), "401",
           "check the token from GPUWARDEN_TOKEN", "unset GPUWARDEN_TOKEN")
    assert not (home / "state.db").exists()


def test_a_viewer_token_cannot_manage_tokens(serve_factory, tmp_path):
    home = tmp_path / "home"
    serve = serve_factory(config(tmp_path), home)
    viewer = ok(gw("token", "create", "--role", "viewer", home=home)).stdout.splitlines()[-1]
    token_file = tmp_path / "viewer.token"
    token_file.write_text(viewer + "\n")
    token_file.chmod(0o600)  # (a file others can read adds a warning line: bearer.py)
    line = failed(gw("token", "create", "--role", "admin", "--token-file", str(token_file),
                     home=home), "`gpuwarden token create` needs an admin token", "viewer")
    assert "--token-file" in line
    remote = {"GPUWARDEN_URL": serve.url, "GPUWARDEN_TOKEN": viewer}
    failed(gw("token", "list", home=tmp_path / "elsewhere", env=remote),
           "`gpuwarden token list` needs an admin token", "GPUWARDEN_TOKEN")
    failed(gw("silence", "add", "--for", "1h", home=tmp_path / "elsewhere", env=remote),
           "needs an operator token")
    assert serve.get("/api/v1/silences").json() == []
    assert [t["role"] for t in serve.get("/api/v1/tokens").json()].count("admin") == 2


def test_alerts_and_silences_are_the_apis(serve_factory, daemon_factory, tmp_path):
    home = tmp_path / "home"
    idle = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                           "--interval", "0.5", "--hostname", "idle"])
    nodes = [{"name": "idle", "url": idle.url, "cost_per_hour": 3.0},
             {"name": "gone", "url": f"http://127.0.0.1:{free_port()}", "cost_per_hour": 1.0}]
    serve = serve_factory(config(tmp_path, nodes, rules={"gpu_idle": {"for": "0s"},
                                                         "node_down": {"for": "0s"}}),
                          home / "demo")  # where the demo keeps its state
    want = {("gpu_idle", "idle/gpu0"), ("gpu_idle", "idle/gpu1"), ("node_down", "gone")}

    def firing():
        return {(a["rule"], a["subject"]) for a in
                serve.get("/api/v1/alerts?state=firing").json()}

    serve.wait(lambda: want <= firing(), what="idle and node_down alerts")
    api = serve.get("/api/v1/alerts").json()
    out = ok(gw("alerts", home=home)).stdout
    assert sorted(table_ids(out)) == sorted(a["id"] for a in api) and len(api) >= 3
    assert all(a["summary"] in out for a in api) and "does not answer" in out
    firing_out = ok(gw("alerts", "--state", "firing", home=home)).stdout
    assert sorted(table_ids(firing_out)) == sorted(
        a["id"] for a in serve.get("/api/v1/alerts?state=firing").json())
    failed(gw("alerts", "--state", "loud", home=home), "--state 'loud'")
    remote = ok(gw("alerts", home=tmp_path / "elsewhere",
                   env={"GPUWARDEN_URL": serve.url, "GPUWARDEN_TOKEN": serve.admin})).stdout
    assert sorted(table_ids(remote)) == sorted(a["id"] for a in api)

    # silence add / list / expire, each visible through the API
    added = ok(gw("silence", "add", "--rule", "gpu_idle", "--subject", "idle/*", "--for", "30m",
                  "--comment", "maintenance", home=home)).stdout
    [s] = serve.get("/api/v1/silences").json()
    assert added.startswith(f"silence {s['id']}: rule gpu_idle subject idle/* until ")
    assert (s["rule"], s["subject"], s["comment"]) == ("gpu_idle", "idle/*", "maintenance")
    assert s["author"].startswith("local CLI") and 1790 < s["expires_at"] - s["created_at"] < 1810
    assert ok(gw("silence", "list", home=home)).stdout.splitlines() == [
        f"{s['id']}\tgpu_idle\tidle/*\t{s['author']}\tmaintenance"]
    silenced = {a["subject"] for a in serve.get("/api/v1/alerts").json() if a["silenced"]}
    assert silenced == {"idle/gpu0", "idle/gpu1"}
    rows = [line for line in ok(gw("alerts", home=home)).stdout.splitlines()
            if re.match(r"^│ \d+ ", line)]
    assert sum(line.rstrip(" │").endswith("yes") for line in rows) == 2

    assert ok(gw("silence", "expire", str(s["id"]), home=home)).stdout.strip() == \
        f"silence {s['id']} expired"
    assert serve.get("/api/v1/silences").json() == []
    [gone] = serve.get("/api/v1/silences", params={"expired": "true"}).json()
    assert gone["id"] == s["id"]
    assert ok(gw("silence", "list", home=home)).stdout == ""
    failed(gw("silence", "expire", str(s["id"]), home=home), "no active silence",
           "gpuwarden silence list")
    failed(gw("silence", "add", "--for", "soon", home=home), "--for", "not a duration")
    failed(gw("silence", "add", "--rule", "no_such_rule", home=home), "--rule", "gpu_idle")
    assert not (home / "state.db").exists()


def test_found_by_url_and_token_from_anywhere(serve_factory, tmp_path):
    serve = serve_factory(config(tmp_path), tmp_path / "home")
    elsewhere = tmp_path / "elsewhere"  # no control plane here: the URL decides
    env = {"GPUWARDEN_URL": serve.url + "/api/v1/", "GPUWARDEN_TOKEN": serve.admin}
    out = ok(gw("token", "create", "--role", "viewer", "--name", "remote", home=elsewhere,
                env=env)).stdout.splitlines()[-1]
    assert me(serve, out).json() == {"name": "remote", "role": "viewer"}
    token_file = tmp_path / "admin.token"
    token_file.write_text(serve.admin)
    listed = ok(gw("token", "list", "--url", serve.url, "--token-file", str(token_file),
                   home=elsewhere)).stdout
    assert "remote" in listed
    failed(gw("alerts", home=elsewhere, env={"GPUWARDEN_URL": serve.url}), "no API token",
           "GPUWARDEN_TOKEN", "--token-file")
    assert not elsewhere.exists()


def test_ask_finds_the_running_serve(serve_factory, tmp_path):
    home = tmp_path / "home"
    serve_factory(config(tmp_path), home)
    result = ok(gw("ask", "how is the cluster doing?", home=home))
    assert result.stdout.strip()
    failed(gw("ask", "hi", home=home, env={"GPUWARDEN_TOKEN": "gw_not_a_real_token_at_all"}),
           "401", "check the token")
    failed(gw("ask", "hi", home=home, env={"GPUWARDEN_TOKEN": "gw_short"}), "GPUWARDEN_TOKEN",
           "shorter than the 16", "openssl rand -hex 32")


def test_several_running_control_planes_must_be_chosen(serve_factory, tmp_path):
    home = tmp_path / "home"
    serve = serve_factory(config(tmp_path), home)
    # a live demo's runtime file beside it (this test's own pid keeps it live)
    demo = runtime.publish(home / "demo", "demo", "http://127.0.0.1:9", "gw_x")
    line = failed(gw("alerts", home=home), "2 control planes", "GPUWARDEN_URL")
    assert serve.url in line and demo.url in line and str(serve.proc.pid) in line
    env = {"GPUWARDEN_URL": serve.url, "GPUWARDEN_TOKEN": serve.admin}
    ok(gw("alerts", home=home, env=env))


def test_a_refused_connection_names_the_url(tmp_path):
    port = free_port()
    line = failed(gw("silence", "list", home=tmp_path / "home",
                     env={"GPUWARDEN_URL": f"http://127.0.0.1:{port}",
                          "GPUWARDEN_TOKEN": "gw_" + "x" * 32}),
                  f"http://127.0.0.1:{port}", "is serve running?")
    assert "refused" in line

