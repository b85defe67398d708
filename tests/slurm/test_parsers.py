"""Parsers on outputs recorded from the real local cluster (tests/slurm/record_samples.py):
4 nodes x 2 a100; a 2-node job, a 1-GPU job, jobs pending on Resources and Priority, held
jobs and a held array; node3 draining with a reason, node4's slurmd killed (down*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.slurm.allocation import JobRef
from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.model import SlurmJob, SlurmSnapshot
from gpuwarden.slurm.parsers import (
    FieldFormatShape,
    V0038Shape,
    parse_job_gpu_details,
    parse_sdiag,
)
from gpuwarden.slurm.parsers.common import parse_duration, split_node_state
from gpuwarden.slurm.profiles import allocated_profiles, profile_from_comment

DATA = Path(__file__).parent / "data"


def read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture(params=["format", "json"])
def shape_files(request: pytest.FixtureRequest) -> tuple[object, str, str]:
    if request.param == "format":
        return FieldFormatShape(), read("squeue_format.txt"), read("sinfo_format.txt")
    return V0038Shape(), read("squeue_v0.0.38.json"), read("sinfo_v0.0.38.json")


def by_key(jobs: list[SlurmJob]) -> dict[tuple[int, str | None], SlurmJob]:
    return {(j.job_id, j.array_task_id): j for j in jobs}


def test_jobs(shape_files: tuple[object, str, str]) -> None:
    shape, squeue, _ = shape_files
    jobs = by_key(shape.parse_jobs(squeue))  # type: ignore[attr-defined]
    assert len(jobs) == 9
    two = jobs[(1, None)]
    assert (two.name, two.user, two.partition, two.state) == ("two-node", "root", "gpu",
                                                              "RUNNING")
    assert two.nodes == ("node1", "node2") and two.num_nodes == 2
    assert two.gpus_requested == 4 and two.time_limit_s == 3600
    assert two.comment == "gpuwarden:profile=inference"
    assert jobs[(2, None)].name == "one gpu | pipe"
    assert jobs[(4, None)].reason == "Resources"
    assert jobs[(5, None)].reason == "Priority"
    held = jobs[(6, None)]
    assert held.reason == "JobHeldUser" and held.start_time is None
    # --gpus=1 (TRES per job) is in the JSON; squeue has no format letter for it.
    assert held.gpus_requested == (1 if isinstance(shape, V0038Shape) else 0)
    assert two.submit_time is not None and two.start_time is not None
    assert two.start_time >= two.submit_time > 1.7e9
    tasks = [jobs[(7, t)] for t in ("0", "1", "2")]
    assert all(t.array_job_id == 7 and t.is_pending for t in tasks)
    assert jobs[(1, None)].array_job_id is None


def test_gpu_detail_from_json_and_scontrol_agree() -> None:
    json_jobs = by_key(V0038Shape().parse_jobs(read("squeue_v0.0.38.json")))
    details = parse_job_gpu_details(read("scontrol_show_job_detail.txt"))
    assert dict(details[1]) == {"node1": (0, 1), "node2": (0, 1)}
    assert dict(details[2]) == {"node3": (0,)}
    for job_id in (1, 2):
        assert dict(json_jobs[(job_id, None)].gpu_detail) == dict(details[job_id])
    assert dict(details[4]) == {}
    one = parse_job_gpu_details(read("scontrol_show_job_detail_one.txt"))
    assert list(one) == [1] and dict(one[1]) == dict(details[1])


def test_nodes_and_partitions(shape_files: tuple[object, str, str]) -> None:
    shape, _, sinfo = shape_files
    info = shape.parse_nodes(sinfo)  # type: ignore[attr-defined]
    nodes = {n.name: n for n in info.nodes}
    assert list(nodes) == ["node1", "node2", "node3", "node4"]
    assert nodes["node1"].state == "mixed"
    assert nodes["node1"].gpus_total == 2 and nodes["node1"].gpus_alloc == 2
    assert nodes["node1"].gres_used[0].indices == (0, 1)
    drain = nodes["node3"]
    assert drain.state == "draining" and "DRAIN" in drain.flags
    assert drain.reason == "bad fan on gpu1" and drain.reason_user == "root"
    assert drain.reason_time is not None and drain.gpus_alloc == 1
    assert drain.gpus_idle == 0 and drain.gpus_other == 1 and not drain.usable
    down = nodes["node4"]
    assert down.state == "down" and "NOT_RESPONDING" in down.flags
    assert down.reason == "Not responding" and down.cpus_idle == 0 and down.cpus_other == 2
    assert sum(n.gpus_total for n in info.nodes) == 8
    assert [(p.name, p.nodes) for p in info.partitions] == [
        ("gpu", ("node1", "node2", "node3", "node4"))]
    assert nodes["node1"].partitions == ("gpu",)


def test_format_shape_reuses_unchanged_records() -> None:
    shape = FieldFormatShape()
    text = read("squeue_format.txt")
    first = shape.parse_jobs(text)
    changed = text.replace("\x1fPriority\x1f", "\x1fResources\x1f")
    second = shape.parse_jobs(changed)
    assert [a is b for a, b in zip(first, second, strict=True)].count(False) == 1
    assert [j.reason for j in second].count("Resources") == 2
    assert shape.parse_jobs("") == []


def test_format_partition_details() -> None:
    part = FieldFormatShape().parse_nodes(read("sinfo_format.txt")).partitions[0]
    assert part.default and part.available == "up" and part.time_limit == "infinite"


def test_sdiag() -> None:
    stats = parse_sdiag(read("sdiag.txt"))
    assert stats.server_thread_count == 3
    assert stats.jobs_submitted == 9 and stats.jobs_started == 3
    assert stats.last_cycle_us == 143 and stats.mean_cycle_us == 620
    assert stats.total_cycles == 3
    assert stats.bf_total_cycles == 1 and stats.bf_last_cycle_us == 472
    assert stats.bf_depth_mean == 2 and stats.bf_last_depth_cycle_try == 2
    assert stats.collected_at == 1795898921.0 and stats.stats_since == 1795898889.0


def test_malformed_outputs_raise_parse_errors() -> None:
    with pytest.raises(ParseError):
        FieldFormatShape().parse_jobs("1\x1f2\x1e\n")
    with pytest.raises(ParseError):
        V0038Shape().parse_jobs('{"meta": {"plugin": {"type": "openapi/v0.0.40"}}}')
    with pytest.raises(ParseError):
        V0038Shape().parse_jobs("not json")
    with pytest.raises(ParseError):
        parse_sdiag("hello")
    assert parse_job_gpu_details("No jobs in the system\n") == {}


def test_metrics_from_recorded_snapshot() -> None:
    from prometheus_client import CollectorRegistry

    from gpuwarden.slurm.metrics import SlurmMetricsCollector

    shape = FieldFormatShape()
    info = shape.parse_nodes(read("sinfo_format.txt"))
    snap = SlurmSnapshot(collected_at=1.0, duration_s=0.1, up=True,
                         jobs=tuple(shape.parse_jobs(read("squeue_format.txt"))),
                         nodes=info.nodes, partitions=info.partitions,
                         stats=parse_sdiag(read("sdiag.txt")))
    registry = CollectorRegistry()
    registry.register(SlurmMetricsCollector(lambda: snap))
    value = registry.get_sample_value
    assert value("slurm_nodes_mix") == 2
    assert value("slurm_nodes_drain") == 1
    assert value("slurm_nodes_down") == 1
    assert value("slurm_gpus_total") == 8 and value("slurm_gpus_alloc") == 5
    # vpenso's: node3 drains with a job on it, so sinfo --state=allocated lists it and its
    # free GPU is "idle"; node4 is down: "other"
    assert value("slurm_gpus_idle") == 1 and value("slurm_gpus_other") == 2
    # gpuwarden's: no job can get a GPU of a draining or down node
    assert value("slurm_gpus_free") == 0 and value("slurm_gpus_unusable") == 3
    assert value("slurm_node_gpus_unusable", {"node": "node4"}) == 2
    assert value("slurm_cpus_other") == 3
    assert value("slurm_node_cpu_other", {"node": "node4", "status": "down*"}) == 2
    assert value("slurm_node_cpu_alloc", {"node": "node3", "status": "draining"}) == 1
    assert value("slurm_node_mem_total", {"node": "node1", "status": "mixed"}) == 1024
    assert value("slurm_queue_pending") == 7 and value("slurm_queue_running") == 2
    assert value("slurm_jobs_pending", {"reason": "JobHeldUser"}) == 4
    assert value("slurm_account_jobs_pending", {"account": "root"}) == 7
    assert value("slurm_account_cpus_running", {"account": "root"}) == 3
    assert value("slurm_user_cpus_pending", {"user": "root"}) == 7
    assert value("slurm_node_reason_timestamp_seconds", {"node": "node3"}) > 0
    assert value("slurm_node_state", {"node": "node4", "state": "down",
                                      "reason": "Not responding"}) == 1
    assert value("slurm_scheduler_backfill_last_cycle") == 472
    assert value("slurm_partition_jobs_pending", {"partition": "gpu"}) == 7
    assert value("slurm_user_gpus_running", {"user": "root"}) == 5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("UNLIMITED", None), ("30", 1800), ("30:00", 1800), ("1:00:00", 3600),
     ("2-12:00:00", 216000), ("1-2", 93600), ("0-01:30", 5400), ("N/A", None)],
)
def test_durations(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_node_states() -> None:
    assert split_node_state("down*", "down+not_responding") == ("down", ("NOT_RESPONDING",))
    assert split_node_state("idle~") == ("idle", ())
    assert split_node_state("drained", "idle+drain") == ("drained", ("DRAIN",))


@pytest.mark.parametrize(
    ("comment", "profile"),
    [(None, "train"), ("", "train"), ("gpuwarden:profile=inference", "inference"),
     ("nightly run; gpuwarden:profile=xid-storm", "xid-storm"),
     ("gpuwarden:profile=thermal-throttle", "thermal-throttle"),
     ("gpuwarden:profile=idle other text", "idle"),
     ("gpuwarden:profile=bogus", "train"), ("xgpuwarden:profile=idle", "train")],
)
def test_profiles(comment: str | None, profile: str) -> None:
    assert profile_from_comment(comment) == profile


def test_a_job_names_one_profile_per_gpu():
    comment = "gpuwarden:profile=train*7+idle"
    assert [profile_from_comment(comment, i) for i in range(9)] == ["train"] * 7 + ["idle"] * 2
    assert [profile_from_comment("gpuwarden:profile=idle+inference*2", i)
            for i in range(4)] == ["idle", "inference", "inference", "inference"]
    assert profile_from_comment("gpuwarden:profile=idle*x", 0) == "train"  # malformed
    assert profile_from_comment("gpuwarden:profile=bogus+idle", 0) == "train"
    # each GPU's place is its rank among its own job's GPUs on the node, by index
    a = JobRef(1, "u", "gpu", "a", comment="gpuwarden:profile=train+idle")
    b = JobRef(2, "u", "gpu", "b", comment="gpuwarden:profile=idle+inference")
    assert allocated_profiles({5: a, 0: b, 3: a, 7: b}) == {
        3: "train", 5: "idle", 0: "idle", 7: "inference"}
