"""Failures of real commands are classified, and the collector survives them."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gpuwarden.slurm import (
    AuthError,
    BadRequest,
    ControllerUnreachable,
    LocalSlurmCluster,
    SlurmAdapter,
    SlurmCollector,
    SlurmMetricsCollector,
    SlurmNotInstalled,
    SlurmTimeout,
)

pytestmark = pytest.mark.slow


def _variant(cluster: LocalSlurmCluster, tmp_path: Path, name: str, text: str) -> Path:
    """A copy of the cluster's slurm.conf (gres.conf beside it) with ``text`` changed."""
    (tmp_path / "gres.conf").write_text((cluster.conf_path.parent / "gres.conf").read_text())
    path = tmp_path / f"{name}.conf"
    path.write_text(text)
    return path


def test_unreachable_controller(slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:
    conf = re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=1", slurm_cluster.conf_path.read_text())
    path = _variant(slurm_cluster, tmp_path, "port", conf + "MessageTimeout=1\n")
    adapter = SlurmAdapter(env={"SLURM_CONF": str(path)})
    with pytest.raises(ControllerUnreachable) as err:
        adapter.jobs()
    assert "unreachable" in str(err.value)


def test_munge_failure_is_an_auth_error(slurm_cluster: LocalSlurmCluster,
                                        tmp_path: Path) -> None:
    conf = slurm_cluster.conf_path.read_text().replace(str(slurm_cluster.munge_socket),
                                                      str(tmp_path / "no-munge.socket"))
    adapter = SlurmAdapter(env={"SLURM_CONF": str(_variant(slurm_cluster, tmp_path, "a", conf))})
    with pytest.raises(AuthError) as err:
        adapter.scheduler_stats()
    assert "munge" in str(err.value).lower()


def test_missing_binaries_and_timeouts(slurm_cluster: LocalSlurmCluster) -> None:
    with pytest.raises(SlurmNotInstalled) as err:
        SlurmAdapter(env={"PATH": "/nonexistent"}).jobs()
    assert "apt-get install -y slurm-wlm munge" in str(err.value)
    with pytest.raises(SlurmTimeout):
        SlurmAdapter(env=slurm_cluster.env(), timeout=0.0001).nodes()


def test_bad_request(adapter: SlurmAdapter) -> None:
    with pytest.raises(BadRequest) as err:
        adapter.run("scontrol", ["hold", "999999"])
    assert "Invalid job id" in str(err.value)


def test_collector_counts_failures_and_keeps_running() -> None:
    adapter = SlurmAdapter(env={"PATH": "/nonexistent"})
    collector = SlurmCollector(adapter, interval=0.05)
    registry = CollectorRegistry()
    registry.register(SlurmMetricsCollector(collector.latest))
    assert list(registry.collect()) == []  # nothing before the first cycle
    snap = collector.collect_once()
    assert not snap.up
    assert set(snap.errors) == {"squeue", "sinfo", "sdiag", "sshare"}  # sshare: fairshare
    assert registry.get_sample_value("slurm_up") == 0
    assert registry.get_sample_value("slurm_collector_errors_total", {"command": "sinfo"}) == 1
    assert registry.get_sample_value("slurm_nodes_idle") is None  # unknown, not zero
    collector.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest = collector.latest()
        if latest is not None and latest.error_counts.get("squeue", 0) >= 4:
            break
        time.sleep(0.02)
    assert collector.running
    collector.stop()
    assert not collector.running
    assert registry.get_sample_value("slurm_collector_errors_total",
                                     {"command": "squeue"}) >= 4
