"""A real 3-node x 2-GPU Slurm cluster for the session (skipped only without Slurm)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmAdapter

DATA = Path(__file__).parent / "data"
SLURMD_TIMEOUT = 3


def _slurm_installed() -> bool:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which("slurmctld", path=path) is not None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    if not _slurm_installed():
        pytest.skip("slurmctld is not installed (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root")
    cluster = LocalSlurmCluster(
        tmp_path_factory.mktemp("slurm") / "cluster",
        nodes=3,
        gpus_per_node=2,
        gpu_type="a100",
        slurmd_timeout=SLURMD_TIMEOUT,
        max_job_count=2000,
        # Short timeouts so a killed slurmd shows as down within seconds, not minutes.
        extra_conf={"MessageTimeout": "2"},
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
        left = cluster.leftover_pids()
        assert not left, f"processes left behind: {left}"


@pytest.fixture
def wait() -> Callable[..., object]:
    """``wait(what, check, timeout=30)``: poll until ``check()`` is truthy."""
    return wait_until


@pytest.fixture
def adapter(slurm_cluster: LocalSlurmCluster) -> SlurmAdapter:
    return slurm_cluster.adapter()


@pytest.fixture
def actions(adapter: SlurmAdapter) -> SlurmActions:
    return SlurmActions(adapter)


@pytest.fixture
def clean_queue(slurm_cluster: LocalSlurmCluster, adapter: SlurmAdapter) -> Iterator[None]:
    """An empty queue and idle nodes before and after the test."""
    _empty_queue(slurm_cluster, adapter)
    yield
    _empty_queue(slurm_cluster, adapter)


def _empty_queue(cluster: LocalSlurmCluster, adapter: SlurmAdapter) -> None:
    adapter.run("scancel", ["--user", "root"])
    wait_until("queue empty", lambda: not [j for j in adapter.jobs()
                                          if j.state in ("PENDING", "RUNNING", "COMPLETING")])
    for node in adapter.nodes().nodes:
        if node.reason and node.state in ("drained", "draining", "down"):
            adapter.run("scontrol", ["update", f"NodeName={node.name}", "State=RESUME"])
    cluster.wait_nodes("idle", timeout_s=30)


def wait_until(what: str, check: Callable[[], object], timeout: float = 30.0,
               interval: float = 0.2) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
