"""Every node runs the control plane's gpuwarden: a real `serve` scraping a real node daemon
that reports another version shows the mismatch on the node (``/api/v1/nodes``) and fires
the ``node_version`` rule; a node of the same version is left alone."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import yaml

from gpuwarden import __version__
from gpuwarden.gpu.wire import version_mismatch
from gpuwarden.watchdog.promrules import prometheus_rules
from gpuwarden.watchdog.rules import load_rules
from tests.conftest import free_port

pytestmark = pytest.mark.slow

OLD = "0.0.1"
# the real node daemon, told it is an older gpuwarden
OLD_DAEMON = ("import runpy, gpuwarden.node.app as app, gpuwarden.node.exposition as ex, "
              "gpuwarden.gpu.wire as wire; "
              f"app.__version__ = ex.__version__ = wire.__version__ = {OLD!r}; "
              "runpy.run_module('gpuwarden', run_name='__main__')")


@pytest.fixture
def old_daemon():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", OLD_DAEMON, "node", "--port", str(port),
                             "--gpu-backend", "sim", "--sim-gpus", "1", "--no-auth",
                             "--interval", "0.5", "--hostname", "old"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).json().get("version") == OLD:
                break
        except (httpx.HTTPError, ValueError):
            time.sleep(0.1)
    assert proc.poll() is None, "the old daemon exited"
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_a_node_of_another_version_is_shown_and_alerted(old_daemon, daemon_factory,
                                                        serve_factory, tmp_path):
    same = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "1", "--no-auth",
                           "--interval", "0.5", "--hostname", "same"])
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "versions", "scrape": {"interval": 0.5, "timeout": 1.0},
        "nodes": [{"name": "old", "url": old_daemon}, {"name": "same", "url": same.url}],
        "watchdog": {"interval": 0.5},
    }))
    serve = serve_factory(config, tmp_path / "home")
    nodes = serve.wait(lambda: (lambda v: v if len(v) == 2 and all(n["up"] for n in v)
                                else None)(serve.get("/api/v1/nodes").json()),
                       what="both nodes scraped")
    by_name = {n["name"]: n for n in nodes}
    assert by_name["old"]["version"] == OLD
    assert by_name["old"]["version_mismatch"] == version_mismatch(OLD, __version__)
    assert f"runs gpuwarden {OLD}, this control plane {__version__}" in by_name["old"][
        "version_mismatch"]
    assert by_name["same"]["version"] == __version__ and by_name["same"][
        "version_mismatch"] is None
    # its data is still stored and shown: a mismatch is flagged, not refused
    assert by_name["old"]["gpus"] == 1 and by_name["old"]["bad_data"] is None
    alerts = serve.wait(lambda: [a for a in serve.get("/api/v1/alerts?state=firing").json()
                                 if a["rule"] == "node_version"], what="node_version alert")
    assert [a["subject"] for a in alerts] == ["old"]
    assert f"runs gpuwarden {OLD}" in alerts[0]["summary"]


def test_the_rule_exports_to_prometheus_with_this_version():
    rules = prometheus_rules(load_rules({}))["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == "node_version"]
    assert rule["expr"] == (f'gpuwarden_build_info{{job=~"gpuwarden-nodes.*",'
                            f'version!="{__version__}"}}')
    assert version_mismatch(__version__, __version__) is None
    assert "reports no gpuwarden version" in (version_mismatch("", __version__) or "")
