"""Nodes outside the default partition (a lab's second partition): the check steps and the
periodic checks' holder jobs name a partition that holds their nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.services.checks import by_partition, holder_minutes
from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SubmitOptions, ValidationError
from gpuwarden.slurm.actions import shared_partition
from gpuwarden.slurm.config import PartitionSpec

OF = {"a1": ("gpu",), "a2": ("gpu", "big"), "b1": ("big",), "b2": ("big",), "lone": ()}


def test_nodes_are_grouped_by_a_partition_they_share() -> None:
    assert by_partition(["a1", "a2", "b1", "b2"], OF) == [["a1", "a2"], ["b1", "b2"]]
    assert by_partition(["a2", "b1", "a1"], OF) == [["a2", "b1"], ["a1"]]
    assert by_partition(["lone", "a1"], OF) == [["lone"], ["a1"]]
    assert by_partition([], OF) == []


def test_the_shared_partition_is_the_default_one_when_it_holds_them() -> None:
    assert shared_partition(["a2"], OF, "gpu") == "gpu"
    assert shared_partition(["a2"], OF, None) == "big"  # the first by name: deterministic
    assert shared_partition(["a2", "b1"], OF, "gpu") == "big"
    assert shared_partition(["a1", "b1"], OF, "gpu") is None
    assert shared_partition(["lone"], OF) is None and shared_partition([], OF) is None


@pytest.fixture(scope="module")
def two_partitions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    cluster = LocalSlurmCluster(
        Path(tmp_path_factory.mktemp("parts")) / "c", nodes=3, gpus_per_node=1,
        node_prefix="p", accounting=False,
        partitions=(PartitionSpec("gpu", ("p1",), default=True),
                    PartitionSpec("big", ("p2", "p3"), max_time="20")))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.mark.slow
def test_a_step_over_nodes_outside_the_default_partition_runs_in_theirs(
        two_partitions: LocalSlurmCluster) -> None:
    actions = SlurmActions(two_partitions.adapter())
    # what the step used to run: srun's default partition does not hold p2 and p3
    plain = actions.adapter.run("srun", ["--nodes=2", "--nodelist=p2,p3", "--immediate=10",
                                         "--exclusive", "hostname"], check=False,
                                timeout=30)
    assert plain.returncode != 0
    result = actions.step(["p2", "p3"], 1, ["sh", "-c", "echo $SLURM_JOB_PARTITION"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["big", "big"]
    one = actions.step(["p1"], 1, ["sh", "-c", "echo $SLURM_JOB_PARTITION"])
    assert one.returncode == 0 and one.stdout.split() == ["gpu"]
    with pytest.raises(ValidationError) as err:
        actions.step(["p1", "p2"], 1, ["true"])
    assert "share no partition" in str(err.value)


@pytest.mark.slow
def test_a_holder_fits_its_partition_s_max_time(two_partitions: LocalSlurmCluster) -> None:
    """A long check's holder asks for 360 minutes; in a partition of MaxTime 20 Slurm
    leaves that pending (PartitionTimeLimit), so the holder asks for the 20 it can get."""
    from tests.waiting import wait_until

    actions = SlurmActions(two_partitions.adapter())
    limit = next(p.time_limit for p in actions.adapter.nodes().partitions if p.name == "big")
    minutes = holder_minutes("long", limit)
    assert minutes == 20 and holder_minutes("long", "UNLIMITED") == 360

    def holder(time: str) -> int:
        return actions.submit("#!/bin/sh\nsleep 300\n", SubmitOptions(
            name="gpuwarden-check", nodes=1, nodelist=("p2",), partition="big", exclusive=True,
            time=time, output="/dev/null"))

    def job(job_id: int):
        return next(j for j in actions.adapter.jobs() if j.job_id == job_id)

    too_long = holder("360")
    try:
        wait_until("Slurm's reason", lambda: job(too_long).reason == "PartitionTimeLimit")
        assert job(too_long).state == "PENDING"
    finally:
        actions.cancel(too_long)
    fitting = holder(str(minutes))
    try:
        wait_until("the holder runs", lambda: job(fitting).state == "RUNNING")
    finally:
        actions.cancel(fitting)
