"""``gpuwarden slurm ...`` through Typer's test runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuwarden import processes
from gpuwarden.slurm import LocalSlurmCluster
from gpuwarden.slurm.cli import app, default_local_dir

runner = CliRunner()

CLUSTER_YAML = """\
name: demo
controller_host: head
controller_addr: 10.0.0.1
nodes:
  - {name: gpu1, addr: 10.0.0.2, cpus: 32, memory_mb: 256000, gpus: 2, gpu_type: h100}
  - {name: gpu2, addr: 10.0.0.3, cpus: 32, memory_mb: 256000, gpus: 2, gpu_type: h100}
max_job_count: 50000
"""


def test_config_writes_files(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER_YAML)
    result = runner.invoke(app, ["config", "--cluster", str(tmp_path / "cluster.yaml"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cgroup.conf", "gres.conf", "slurm.conf"]
    assert "MaxJobCount=50000" in (tmp_path / "out" / "slurm.conf").read_text()


def test_config_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER_YAML.replace("gpus: 2, gpu_type: h100}",
                                                                "gpus: 2, colour: red}", 1))
    result = runner.invoke(app, ["config", "--cluster", str(tmp_path / "cluster.yaml"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "nodes[0].colour" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["config", "--cluster", str(tmp_path / "missing.yaml"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "cannot read" in result.output


def test_default_dir() -> None:
    assert default_local_dir({"GPUWARDEN_HOME": "/srv/gw"}) == Path("/srv/gw/slurm-local")
    assert default_local_dir({}) == Path("~/.local/share/gpuwarden/slurm-local").expanduser()


def test_status_of_missing_cluster(tmp_path: Path) -> None:
    result = runner.invoke(app, ["local", "status", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no local cluster" in result.output


@pytest.mark.slow
def test_local_status_up_down(slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:
    result = runner.invoke(app, ["local", "status", "--dir", str(slurm_cluster.directory)])
    assert result.exit_code == 0, result.output
    assert "node3" in result.output and "running" in result.output

    directory = tmp_path / "one"
    result = runner.invoke(app, ["local", "up", "--nodes", "1", "--gpus-per-node", "1",
                                 "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert f"SLURM_CONF={directory / 'etc' / 'slurm.conf'}" in result.output.replace("\n", "")
    cluster = LocalSlurmCluster(directory, nodes=1)
    status = cluster.status()
    assert status.running
    # the demo's last sweep finds every daemon by the cluster directory in its environment:
    # with accounting installed, the private mariadbd and slurmdbd too
    swept = set(processes.under(directory, ("GPUWARDEN_SLURM_LOCAL",)))
    daemons = {p.name: p.pid for p in status.processes}
    if cluster.has_accounting:
        assert {"mariadbd", "slurmdbd"} <= set(daemons)
    assert set(daemons.values()) <= swept
    result = runner.invoke(app, ["local", "down", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert "slurmctld" in result.output
    assert not cluster.status().running and cluster.leftover_pids() == []
    assert processes.under(directory, ("GPUWARDEN_SLURM_LOCAL", "SLURM_CONF")) == []
    assert os.path.exists(directory / "etc" / "slurm.conf")
