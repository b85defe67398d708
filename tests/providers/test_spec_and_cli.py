"""The cluster description's validation, the static provider and the Typer commands."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from gpuwarden.errors import GpuwardenError
from gpuwarden.providers import Runtime, down, load_description, parse_description, status, up
from gpuwarden.providers.bootstrap import parse_node_table
from gpuwarden.providers.cli import app
from gpuwarden.state.inventory import Inventory


def test_smallest_description(tmp_path):
    path = tmp_path / "dev.yaml"
    path.write_text("name: dev\nprovider: local\nnodes: 2\ngpus_per_node: 2\n")
    spec = load_description(path)
    assert (spec.nodes, spec.gpus_per_node, spec.slurm, spec.market) == (2, 2, True, "on-demand")


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "Dev", "provider": "local"}, "name: String should match pattern"),
    ({"name": "dev", "provider": "aws"}, "provider: Input should be 'local', 'static'"),
    ({"name": "dev", "provider": "local", "nodes": 0}, "nodes: Input should be greater"),
    ({"name": "dev", "provider": "runpod"}, "gpu_type: provider runpod needs a GPU type"),
    ({"name": "dev", "provider": "runpod", "gpu_type": "x", "market": "spot"},
     "market: RunPod's REST API v2 cannot create spot"),
    ({"name": "dev", "provider": "static"}, "provider static needs machines"),
    ({"name": "dev", "provider": "local", "nodez": 2}, "nodez: unknown key"),
    ({"name": "dev", "provider": "local", "autostop": {"idle_minutes": 0}},
     "autostop.idle_minutes: Input should be greater than 0"),
])
def test_errors_name_the_field_and_the_fix(data, message):
    with pytest.raises(GpuwardenError, match="cluster description: .*" + message.replace(
            "(", r"\(")):
        parse_description(data)


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: dev\nprovider: [local\n")
    with pytest.raises(GpuwardenError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_description(path)


def test_node_table_errors_say_how_to_write_it():
    assert parse_node_table("node1=10.0.0.1:6818,node2=h:7") == [("node1", "10.0.0.1", 6818),
                                                                  ("node2", "h", 7)]
    with pytest.raises(ValueError, match="node1=ADDR:PORT"):
        parse_node_table("node1=10.0.0.1")


def test_static_registers_and_unregisters(daemon_factory, db):
    daemon = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "1", "--no-auth"])
    spec = parse_description({"name": "lab", "provider": "static", "machines": [
        {"name": "box1", "address": daemon.url, "role": "controller", "cost_per_hour": 1.5}]})
    report = up(spec, db, runtime=Runtime(env={}))
    assert report.ready and report.cost_per_hour == 1.5
    assert [n.name for n in Inventory(db).nodes()] == ["box1"]
    assert status("lab", db).nodes[0].healthy
    down("lab", db)
    assert Inventory(db).nodes() == [] and daemon.proc.poll() is None  # left running


def test_cli_up_status_down(fake_runpod, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("GPUWARDEN_HOME", str(home))
    monkeypatch.setenv("RUNPOD_API_KEY", fake_runpod.api_key)
    import gpuwarden.providers.lifecycle as lifecycle

    original = lifecycle.Runtime

    def fake_runtime(**kw):
        return original(runpod_base_url=fake_runpod.url, runpod_node_url=fake_runpod.node_url(),
                        runpod_poll_s=0.1, **kw)

    monkeypatch.setattr(lifecycle, "Runtime", fake_runtime)
    path = tmp_path / "c.yaml"
    path.write_text("name: cli\nprovider: runpod\nnodes: 2\ngpu_type: NVIDIA L4\n"
                    "runpod: {install: {image: ghcr.io/example/gpuwarden-node:0.1.0}}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["up", str(path)])
    assert result.exit_code == 0, result.output
    assert "cli-node1" in result.output and "RUNNING" in result.output
    # progress lines carry a timestamp, not the source file that logged them
    assert "registered 2 node(s)" in result.output and ".py:" not in result.output
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0 and "$0.86/hr" in result.output, result.output
    result = runner.invoke(app, ["down", "cli"])
    assert result.exit_code == 0 and "cli: down" in result.output, result.output
    result = runner.invoke(app, ["status", "cli"])
    assert isinstance(result.exception, GpuwardenError)
    assert "no cluster named 'cli'" in str(result.exception)
    assert isinstance(app, typer.Typer)
