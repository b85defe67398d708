"""`gpuwarden export prometheus`: a scrape config for every node of the inventory (the config
file's and those `gpuwarden up` registered), bearer tokens by file path, the watchdog's
alerting rules and the cost recording rules beside it — all passing promtool, and the
recording rules computing what the control plane computes (promtool test rules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpuwarden.providers.base import NodeRecord
from gpuwarden.providers.registry import upsert_provider_nodes
from gpuwarden.state.db import StateDB
from tests.deploy.stack import run_cli

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed "
                                    "(apt-get install prometheus; `make test` installs it)")


def promtool(*args: str, cwd: Path | None = None) -> str:
    assert PROMTOOL is not None
    run = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two config nodes (one with a token file) and one node a provider registered."""
    tmp_path = tmp_path_factory.mktemp("export")
    token, provider_token = tmp_path / "node.token", tmp_path / "pod.token"
    token.write_text("config-secret\n")
    provider_token.write_text("provider-secret\n")
    home = tmp_path / "home"
    db = StateDB(home / "state.db")
    upsert_provider_nodes(db, "train", "runpod", [NodeRecord(
        "train-node1", 1, "controller", "RUNNING", url="http://10.0.0.9:9400",
        token_file=provider_token, cost_per_hour=21.5)])
    db.close()
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "lab", "idle_utilization_percent": 10,
        "scrape": {"interval": 5},
        "nodes": [{"name": "n1", "url": "http://10.0.0.1:9400", "token_file": str(token),
                   "cost_per_hour": 18},
                  {"name": "n2", "url": "https://10.0.0.2:9400"}],
        "watchdog": {"rules": {"gpu_memory_full": False}}}))
    out = tmp_path / "prom"
    result = run_cli("export", "prometheus", "--config", str(config), "--out", str(out),
                     home=home)
    assert "prometheus.yml" in result.stdout
    return config, out


def test_every_inventory_node_is_scraped_with_tokens_by_path(exported) -> None:
    config, out = exported
    text = (out / "prometheus.yml").read_text()
    assert "secret" not in text
    document = yaml.safe_load(text)
    assert document["rule_files"] == ["gpuwarden-rules.yml", "gpuwarden-recording-rules.yml"]
    assert document["global"]["scrape_interval"] == "5s"  # the config's scrape.interval
    targets = {}
    for scrape in document["scrape_configs"]:
        for static in scrape["static_configs"]:
            targets[static["labels"]["node"]] = (static["targets"], scrape.get("authorization"))
    assert set(targets) == {"n1", "n2", "train-node1"}
    assert targets["train-node1"][0] == ["10.0.0.9:9400"]
    assert targets["train-node1"][1] == {
        "type": "Bearer", "credentials_file": str((config.parent / "pod.token").resolve())}
    assert targets["n1"][1]["credentials_file"] == str((config.parent / "node.token").resolve())
    assert targets["n2"][1] is None
    # the alerting rules are the watchdog's, with the config's overrides
    rules = yaml.safe_load((out / "gpuwarden-rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"gpu_idle", "thermal_throttle", "node_down"} <= names
    assert "gpu_memory_full" not in names
    recording = yaml.safe_load((out / "gpuwarden-recording-rules.yml").read_text())
    costs = {r["labels"]["node"]: r["expr"] for r in recording["groups"][0]["rules"]
             if r["record"] == "gpuwarden:node_cost_per_hour"}
    assert costs == {"n1": "vector(18)", "n2": "vector(0)", "train-node1": "vector(21.5)"}
    assert any(r["expr"] == "DCGM_FI_DEV_GPU_UTIL < bool 10"
               for r in recording["groups"][0]["rules"])


def test_prometheus_rules_command_writes_the_same_alerting_rules(exported, tmp_path) -> None:
    config, out = exported
    alone = tmp_path / "rules.yml"
    run_cli("export", "prometheus-rules", "--config", str(config), "--out", str(alone),
            home=tmp_path / "home")
    assert alone.read_text() == (out / "gpuwarden-rules.yml").read_text()


@needs_promtool
def test_exported_files_pass_promtool(exported) -> None:
    _, out = exported
    report = promtool("check", "config", str(out / "prometheus.yml"))
    assert "SUCCESS: 2 rule files found" in report
    for name in ("gpuwarden-rules.yml", "gpuwarden-recording-rules.yml"):
        assert "SUCCESS" in promtool("check", "rules", str(out / name))


@needs_promtool
def test_recording_rules_compute_cost_and_waste(exported) -> None:
    """n1 costs $18/hr with 2 GPUs: GPU 0 idle and held by job 7 (alice), GPU 1 busy and
    shared by jobs 8 (bob) and 9 (carol); n2 costs nothing; train-node1 ($21.5/hr) has one
    lost GPU.  Threshold 10 %."""
    _, out = exported
    gpu = 'node="n1", gpu="{}", Hostname="h1"'
    tests = {
        "rule_files": ["gpuwarden-recording-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"gpuwarden_gpu_up{{{gpu.format(0)}}}", "values": "1x5"},
                {"series": f"gpuwarden_gpu_up{{{gpu.format(1)}}}", "values": "1x5"},
                {"series": 'gpuwarden_gpu_up{node="n2", gpu="0", Hostname="h2"}',
                 "values": "1x5"},
                {"series": 'gpuwarden_gpu_up{node="train-node1", gpu="0", Hostname="h3"}',
                 "values": "0x5"},
                {"series": f"DCGM_FI_DEV_GPU_UTIL{{{gpu.format(0)}}}", "values": "3x5"},
                {"series": f"DCGM_FI_DEV_GPU_UTIL{{{gpu.format(1)}}}", "values": "95x5"},
                {"series": 'DCGM_FI_DEV_GPU_UTIL{node="n2", gpu="0", Hostname="h2"}',
                 "values": "0x5"},
                {"series": f'gpuwarden_gpu_job_info{{{gpu.format(0)}, job_id="7", '
                           'user="alice"}', "values": "1x5"},
                {"series": f'gpuwarden_gpu_job_info{{{gpu.format(1)}, job_id="8", '
                           'user="bob"}', "values": "1x5"},
                {"series": f'gpuwarden_gpu_job_info{{{gpu.format(1)}, job_id="9", '
                           'user="carol"}', "values": "1x5"},
            ],
            "promql_expr_test": [
                {"expr": "gpuwarden:gpu_cost_per_hour", "eval_time": "2m", "exp_samples": [
                    {"labels": f"gpuwarden:gpu_cost_per_hour{{{gpu.format(0)}}}", "value": 9},
                    {"labels": f"gpuwarden:gpu_cost_per_hour{{{gpu.format(1)}}}", "value": 9},
                    {"labels": 'gpuwarden:gpu_cost_per_hour{node="n2", gpu="0", Hostname="h2"}',
                     "value": 0},
                    {"labels": 'gpuwarden:gpu_cost_per_hour{node="train-node1", gpu="0", '
                               'Hostname="h3"}', "value": 21.5}]},
                {"expr": "gpuwarden:gpu_wasted_cost_per_hour", "eval_time": "2m",
                 "exp_samples": [
                     {"labels": f"gpuwarden:gpu_wasted_cost_per_hour{{{gpu.format(0)}}}",
                      "value": 9},
                     {"labels": 'gpuwarden:gpu_wasted_cost_per_hour{node="n2", gpu="0", '
                                'Hostname="h2"}', "value": 0}]},
                {"expr": "sum by (job_id, user) (gpuwarden:job_gpu_cost_per_hour)",
                 "eval_time": "2m", "exp_samples": [
                     {"labels": '{job_id="7", user="alice"}', "value": 9},
                     {"labels": '{job_id="8", user="bob"}', "value": 4.5},
                     {"labels": '{job_id="9", user="carol"}', "value": 4.5}]},
                {"expr": "sum by (user) (gpuwarden:job_gpu_wasted_cost_per_hour)",
                 "eval_time": "2m", "exp_samples": [{"labels": '{user="alice"}', "value": 9}]},
                {"expr": "gpuwarden:gpu_idle", "eval_time": "2m", "exp_samples": [
                    {"labels": f"gpuwarden:gpu_idle{{{gpu.format(0)}}}", "value": 1},
                    {"labels": f"gpuwarden:gpu_idle{{{gpu.format(1)}}}", "value": 0},
                    {"labels": 'gpuwarden:gpu_idle{node="n2", gpu="0", Hostname="h2"}',
                     "value": 1}]},
            ],
        }],
    }
    (out / "cost-test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    try:
        assert "SUCCESS" in promtool("test", "rules", "cost-test.yml", cwd=out)
    finally:
        (out / "cost-test.yml").unlink()


def test_no_nodes_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "gpuwarden", "export", "prometheus",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "GPUWARDEN_HOME": str(home)})
    assert result.returncode != 0 and "no nodes to scrape" in result.stderr
    assert "Traceback" not in result.stderr
    assert not home.exists()  # no state database made just to be read
