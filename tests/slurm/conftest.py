"""Fixtures on the session's real 3-node x 2-GPU Slurm cluster (``slurm_cluster``, from
tests/conftest.py; skipped only without Slurm), and ``time_limited_job``: a job that Slurm
ends for its time limit, on a small cluster of its own started as the session begins."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmAdapter, SubmitOptions
from tests.conftest import _slurm_installed
from tests.waiting import wait_until  # (the Slurm tests import it from here too)

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


# -- a job that hits its time limit, started as the session begins ------------------------
# Slurm counts time limits in minutes and slurmctld checks them every 30 s (PERIODIC_TIMEOUT
# in its source; OverTimeLimit only adds minutes: no slurm.conf setting shortens it), so a
# --time=1 job ends as TIMEOUT 60 to 90 s after it starts. Submitted when collection ends,
# on a cluster of its own (the shared one must stay idle between tests), it has timed out
# by the time the test that asks for it runs.
TIME_LIMIT_MIN = 1


class TimeLimitedJob:
    """A ``--time=1`` ``sleep 300`` job on a 1-node, 1-GPU local cluster with accounting
    (when slurmdbd and MariaDB are installed), brought up in a background thread."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gw-timelimit-"))
        self.cluster = LocalSlurmCluster(self.directory / "cluster", nodes=1,
                                         gpus_per_node=1, gpu_type="a100", slurmd_timeout=5)
        self.job_id: int | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="time-limited-job",
                                        daemon=True)
        self._down = False

    def start(self) -> TimeLimitedJob:
        self._thread.start()
        return self

    def _start(self) -> None:
        try:
            self.cluster.up()
            if self.cluster.has_accounting:  # without it there is no TIMEOUT to read back
                self.job_id = SlurmActions(self.cluster.adapter()).submit(
                    "#!/bin/sh\nsleep 300\n",
                    SubmitOptions(name="slow", time=str(TIME_LIMIT_MIN), output="/dev/null"))
        except BaseException as exc:  # the test that asks for the job reports it
            self._error = exc

    def ready(self, timeout: float = 90.0) -> TimeLimitedJob:
        """Wait for the cluster and the submission; raise what went wrong there."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"the time-limited job's cluster did not come up in {timeout:.0f}s")
        if self._error is not None:
            raise self._error
        return self

    def down(self) -> list[int]:
        """Stop the cluster (once); the pids still alive, if any."""
        if self._down:
            return []
        self._down = True
        self._thread.join(60)
        self.cluster.down()
        left = self.cluster.leftover_pids()
        if not left:
            shutil.rmtree(self.directory, ignore_errors=True)
        return left


_TIME_LIMITED = pytest.StashKey[TimeLimitedJob]()


def _start_time_limited_job(config: pytest.Config) -> TimeLimitedJob:
    job = config.stash[_TIME_LIMITED] = TimeLimitedJob()
    config.add_cleanup(job.down)  # also when the test never runs (-x, Ctrl-C)
    return job.start()


def pytest_collection_finish(session: pytest.Session) -> None:
    """As soon as the session knows it runs a test that asks for ``time_limited_job``."""
    if session.config.option.collectonly or not _slurm_installed() or os.geteuid() != 0:
        return
    if any("time_limited_job" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_time_limited_job(session.config)


@pytest.fixture
def time_limited_job(request: pytest.FixtureRequest) -> Iterator[TimeLimitedJob]:
    """The session's time-limited job (see above), its cluster up; skipped without Slurm,
    root or accounting. Its cluster goes down after the test."""
    if not _slurm_installed():
        pytest.skip("slurmctld is not installed (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root")
    job = request.config.stash.get(_TIME_LIMITED, None)
    if job is None:  # collected in a way the hook did not see: start it now
        job = _start_time_limited_job(request.config)
    job.ready()
    if job.job_id is None:
        pytest.skip("no accounting: apt-get install -y mariadb-server slurmdbd")
    yield job
    left = job.down()
    assert not left, f"processes left behind: {left}"
