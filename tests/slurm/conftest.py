"""Fixtures on the session's real 3-node x 2-GPU Slurm cluster (``slurm_cluster``, from
tests/conftest.py; skipped only without Slurm)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmAdapter

DATA = Path(__file__).parent / "data"


# slurm_cluster (the session's one real cluster) lives in tests/conftest.py, so the
# browser tests share it instead of starting a second one.


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
