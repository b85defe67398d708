"""A real monitoring stack for the deploy tests: a 2-node local Slurm cluster, sim node
daemons (the controller's running the Slurm collector, one with throttling, XIDs and a lost
GPU), one inventory node that does not answer, and a real Prometheus configured by
`gpuwarden export prometheus` (bearer tokens read from the token file); plus Grafana's
dashboards as `gpuwarden export grafana` writes them.

Workload: an idle job holding a GPU on node1 (allocated but idle), a training job on both
GPUs of node2, a held job (pending, JobHeldUser); node1's other GPU idles with no job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SubmitOptions
from tests.conftest import Daemon, free_port, start_daemon
from tests.waiting import wait_until

TOKEN = "deploy-test-token"
SLEEP = "#!/bin/sh\nsleep 600\n"
COSTS = {"node1": 8.0, "node2": 8.0, "node3": 6.0, "node4": 2.0}
# Grafana's global variables, as a dashboard over the last hour at ~2 s resolution sees them
BUILTINS = {"__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
            "__interval": "2s", "__interval_ms": "2000", "__rate_interval": "15s"}


@dataclass
class Stack:
    tmp: Path
    prometheus_url: str
    config: Path
    prometheus_dir: Path
    grafana_dir: Path
    daemons: dict[str, Daemon]
    home: Path
    jobs: dict[str, str] = field(default_factory=dict)

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return _api(self.prometheus_url + "/api/v1/query", params)["result"]

    def query_range(self, expr: str, seconds: float = 20.0) -> list[dict[str, Any]]:
        now = time.time()
        return _api(self.prometheus_url + "/api/v1/query_range", {
            "query": expr, "start": f"{now - seconds:.3f}", "end": f"{now:.3f}",
            "step": "1"})["result"]

    def label_values(self, metric_selector: str, label: str) -> list[str]:
        series = _api(self.prometheus_url + "/api/v1/series",
                      {"match[]": metric_selector, "start": f"{time.time() - 60:.3f}"})
        return sorted({s[label] for s in series if label in s})


def _api(url: str, params: dict[str, str]) -> Any:
    response = httpx.get(url, params=params, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body.get("status") == "success", (
        f"{url} {params}: {response.status_code} {body}")
    return body["data"]


def run_cli(*args: str, home: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "GPUWARDEN_HOME": str(home)},
                            **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def start_stack(tmp: Path, stoppers: list) -> Stack:
    """Start everything; ``stoppers`` gets what to stop, in order, as things start (so a
    failed start leaves nothing running once the caller runs them)."""
    for binary in ("prometheus", "promtool"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (apt-get install prometheus; `make test` "
                        "installs it)")
    if shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        pytest.skip("slurmctld is not installed (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root")
    cluster = LocalSlurmCluster(tmp / "slurm", nodes=2, gpus_per_node=2, gpu_type="h100",
                                slurmd_timeout=3)
    stoppers.append(cluster.down)
    stoppers.append(lambda: _assert_nothing_left(cluster))
    cluster.up()
    token_file = tmp / "node.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {**cluster.env()}
    common = ["--gpu-backend", "sim", "--interval", "0.5", "--token-file", str(token_file)]
    daemons: dict[str, Daemon] = {}

    def daemon(name: str, *args: str) -> None:
        d = start_daemon([*common, "--hostname", name, *args], token=TOKEN, env=env)
        daemons[name] = d
        stoppers.insert(0, lambda d=d: _stop(d.proc))

    daemon("node1", "--sim-gpus", "2", "--slurm", "--slurm-controller", "--slurm-node", "node1",
           "--slurm-interval", "1")
    daemon("node2", "--sim-gpus", "2", "--slurm", "--slurm-node", "node2",
           "--slurm-interval", "1")
    daemon("node3", "--sim-gpus", "3", "--sim-profile", "0=thermal-throttle,1=xid-storm,2=lost")

    actions = SlurmActions(cluster.adapter())
    jobs = {
        "idle": str(actions.submit(SLEEP, SubmitOptions(
            name="notebook", nodelist=("node1",), gres="gpu:1",
            comment="gpuwarden:profile=idle"))),
        "train": str(actions.submit(SLEEP, SubmitOptions(
            name="train", nodelist=("node2",), gres="gpu:2",
            comment="gpuwarden:profile=train"))),
        "held": str(actions.submit(SLEEP, SubmitOptions(name="held", hold=True))),
    }

    home = tmp / "home"
    config = tmp / "gpuwarden.yaml"
    nodes = [{"name": name, "url": d.url, "token_file": str(token_file),
              "cost_per_hour": COSTS[name]} for name, d in daemons.items()]
    nodes[0]["role"] = "controller"
    nodes.append({"name": "node4", "url": f"http://127.0.0.1:{free_port()}",
                  "token_file": str(token_file), "cost_per_hour": COSTS["node4"]})
    config.write_text(yaml.safe_dump({"cluster": "deploy", "nodes": nodes,
                                      "scrape": {"interval": 1, "timeout": 1}}))
    prom_dir, graf_dir = tmp / "prometheus", tmp / "grafana"
    run_cli("export", "prometheus", "--config", str(config), "--out", str(prom_dir), home=home)
    run_cli("export", "grafana", "--out", str(graf_dir), "--scrape-interval", "1", home=home)

    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stoppers.insert(0, lambda: _stop(proc))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"prometheus exited: {proc.stderr.read()}"
        try:
            return httpx.get(url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until("prometheus to be ready", ready, timeout=40, interval=0.5)
    stack = Stack(tmp, url, config, prom_dir, graf_dir, daemons, home, jobs)
    # the workload is visible in Prometheus: jobs on GPUs, a pending reason, rules evaluated
    wait_until("the workload in Prometheus", lambda: (
        len(stack.query("gpuwarden_gpu_job_info")) == 3
        and stack.query('slurm_jobs_pending{reason="JobHeldUser"}')
        and stack.query("gpuwarden:job_gpu_wasted_cost_per_hour")
        and stack.query('up{node="node4"} == 0')), timeout=60, interval=0.5)
    return stack


def _assert_nothing_left(cluster: LocalSlurmCluster) -> None:
    left = cluster.leftover_pids()
    assert not left, f"Slurm processes left behind: {left}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Grafana dashboards -------------------------------------------------------------------------


def load_dashboards(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def walk(items: list[dict[str, Any]]) -> None:
        for panel in items:
            out.append(panel)
            walk(panel.get("panels") or [])

    walk(board.get("panels") or [])
    return out


def targets(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query."""
    return [(f"panel {p.get('title')!r} {t.get('refId', '')}", t["expr"])
            for p in panels(board) for t in p.get("targets") or [] if t.get("expr")]


def query_variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (board.get("templating") or {}).get("list") or []
            if v.get("type") == "query"]


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    return query.get("query", "") if isinstance(query, dict) else (query or "")


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*(\w+)\)\s*$")


def regex_escape(value: str) -> str:
    """How Grafana's Prometheus datasource escapes a multi-value variable's values."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"{expr!r} uses ${name}, which the dashboard does not define")
        return values[name]

    return _VAR.sub(one, expr)


def resolve_variables(stack: Stack, board: dict[str, Any]) -> dict[str, str]:
    """Each query variable set to "All" the way Grafana expands it: a regex of the values its
    own query returns from this Prometheus (each must return at least one)."""
    values = dict(BUILTINS)
    for var in query_variables(board):
        query = substitute(variable_query(var), values)
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {var['name']}: only label_values(metric, label) is handled"
        found = stack.label_values(match.group(1), match.group(2))
        assert found, f"variable {var['name']}: {query} returns no value"
        escaped = [regex_escape(v) for v in found]
        values[var["name"]] = ("(" + "|".join(escaped) + ")") if var.get("multi") else escaped[0]
    return values


_OR_ZERO = re.compile(r"\s+or\s+vector\(0\)\s*$")


def check_queries(stack: Stack, board: dict[str, Any], timeout: float = 30.0) -> int:
    """Every panel query, variables substituted, returns data from the stack's Prometheus
    (a trailing `or vector(0)` is taken off first, so it cannot hide a query that returns
    nothing).  Queries are retried until ``timeout`` (rate windows fill up).  Returns how
    many were checked."""
    values = resolve_variables(stack, board)
    pending = {where: _OR_ZERO.sub("", substitute(expr, values)) for where, expr in
               targets(board)}
    assert pending, "no queries"
    count = len(pending)
    deadline = time.monotonic() + timeout
    while True:
        for where, expr in list(pending.items()):
            if stack.query_range(expr):
                del pending[where]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not pending, "queries that return no data:\n" + "\n".join(
        f"  {where}: {expr}" for where, expr in pending.items())
    return count
