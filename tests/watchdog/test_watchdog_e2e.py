"""The watchdog inside a real `serve`, over real sim node daemons, notifying a real HTTP
receiver through Apprise; and its rules exported to a real Prometheus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.conftest import free_port, stop
from tests.watchdog.test_notify import Receiver

pytestmark = pytest.mark.slow


def test_rules_fire_and_resolve_end_to_end(daemon_factory, serve_factory, tmp_path):
    receiver = Receiver()
    try:
        hot = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                              "--sim-profile", "0=thermal-throttle,1=xid-storm", "--interval",
                              "0.5", "--hostname", "hot"])
        idle = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "1", "--no-auth",
                               "--interval", "0.5", "--hostname", "idle"])
        config = tmp_path / "gpuwarden.yaml"
        config.write_text(yaml.safe_dump({
            "cluster": "e2e",
            "scrape": {"interval": 0.5, "timeout": 1.0},
            "nodes": [{"name": "hot", "url": hot.url, "cost_per_hour": 6.0},
                      {"name": "idle", "url": idle.url, "cost_per_hour": 3.0}],
            "watchdog": {
                "interval": 0.5,
                "notify": [receiver.url],
                "rules": {"thermal_throttle": {"for": "1s"}, "gpu_idle": {"for": "1s"},
                          "node_down": {"for": "1s"}},
                "policies": [{"rule": "node_down", "action": "stop_pod", "mode": "dry-run"}],
            },
        }))
        serve = serve_factory(config, tmp_path / "home")

        def firing():
            return {(a["rule"], a["subject"]) for a in
                    serve.get("/api/v1/alerts?state=firing").json()}

        serve.wait(lambda: {("thermal_throttle", "hot/gpu0"), ("gpu_idle", "idle/gpu0")}
                   <= firing(), timeout=20, what="thermal and idle alerts")
        serve.wait(lambda: any(r in {"xid_application", "xid_hardware"} for r, _ in firing()),
                   timeout=20, what="an XID alert")
        alerts = serve.get("/api/v1/alerts?state=firing").json()
        idle_alert = next(a for a in alerts if a["rule"] == "gpu_idle")
        assert "$3.00/hr" in idle_alert["summary"]
        assert serve.get("/api/v1/overview").json()["alerts_active"] >= 3
        # a node dies: node_down fires, the dry-run policy proposes and runs nothing
        stop(idle.proc, signal.SIGKILL)
        serve.wait(lambda: ("node_down", "idle") in firing(), timeout=15, what="node_down")
        actions = serve.wait(lambda: serve.get("/api/v1/actions").json(), what="an action")
        assert actions[0]["state"] == "dry-run" and actions[0]["target"] == "idle"
        audit = serve.get("/api/v1/audit").json()
        assert any(e["outcome"] == "would run (dry-run)" for e in audit)
        # the idle alert of the dead node resolves: its GPU is down, not idle any more
        serve.wait(lambda: ("gpu_idle", "idle/gpu0") not in firing(), timeout=10,
                   what="idle alert resolved")
        # notifications arrived, one message per cycle, every transition once
        serve.wait(lambda: any("node idle does not answer" in m["message"]
                               for m in receiver.received), timeout=15, what="notification")
        lines = [line for m in receiver.received for line in m["message"].splitlines()]
        firing_lines = [x for x in lines if "[FIRING" in x and "rule node_down" in x]
        assert len(firing_lines) == 1
    finally:
        receiver.close()


@pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                    reason="Debian's prometheus package is not installed (make test installs it)")
def test_exported_rules_pass_promtool_and_fire_in_prometheus(daemon_factory, tmp_path):
    rules = tmp_path / "rules.yml"
    overrides = tmp_path / "gpuwarden.yaml"
    overrides.write_text(yaml.safe_dump({"watchdog": {"rules": {"thermal_throttle":
                                                                {"for": "2s"}}}}))
    out = subprocess.run([sys.executable, "-m", "gpuwarden", "export", "prometheus-rules",
                          "--config", str(overrides), "--out", str(rules)],
                         capture_output=True, text=True, timeout=60, env={**os.environ})
    assert out.returncode == 0, out.stderr
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr

    node = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                           "--sim-profile", "0=thermal-throttle", "--interval", "0.5",
                           "--hostname", "hot"])
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "gpuwarden-nodes", "static_configs": [
            {"targets": [node.url.removeprefix("http://")], "labels": {"node": "hot"}}]}],
    }))
    prom = subprocess.Popen(["prometheus", f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 45
        alerts = []
        while time.monotonic() < deadline:
            try:
                alerts = httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2).json()[
                    "data"]["alerts"]
            except (httpx.HTTPError, ValueError, KeyError):
                alerts = []
            if any(a["labels"]["alertname"] == "thermal_throttle" and a["state"] == "firing"
                   for a in alerts):
                break
            time.sleep(0.5)
        hot = [a for a in alerts if a["labels"]["alertname"] == "thermal_throttle"]
        assert hot and hot[0]["state"] == "firing", alerts
        assert {a["labels"]["gpu"] for a in hot} == {"0"}
        assert hot[0]["labels"]["node"] == "hot"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
