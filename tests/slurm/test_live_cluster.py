"""Against the real local Slurm cluster of conftest.py (3 nodes x 2 a100 GPUs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gpuwarden.slurm import (
    BadRequest,
    CommandResult,
    JobRef,
    LocalSlurmCluster,
    SlurmActions,
    SlurmAdapter,
    SlurmCollector,
    SlurmMetricsCollector,
    SubmitOptions,
    SubprocessRunner,
    ValidationError,
    gpu_allocations,
    gpu_profiles,
)

SLEEP = "#!/bin/sh\nsleep 300\n"
pytestmark = pytest.mark.slow

Wait = Callable[..., object]


def registry_for(collector: SlurmCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SlurmMetricsCollector(collector.latest))
    return registry


def test_all_nodes_idle_with_their_gres(adapter: SlurmAdapter, clean_queue: None) -> None:
    info = adapter.nodes()
    assert [n.name for n in info.nodes] == ["node1", "node2", "node3"]
    for node in info.nodes:
        assert node.state == "idle"
        assert [str(g) for g in node.gres] == ["gpu:a100:2"]
        assert node.gpus_total == 2 and node.gpus_alloc == 0
    assert [(p.name, p.default, p.nodes) for p in info.partitions] == [
        ("gpu", True, ("node1", "node2", "node3"))]


def test_two_node_gpu_job_runs_across_nodes(actions: SlurmActions, adapter: SlurmAdapter,
                                            tmp_path: Path, wait: Wait,
                                            clean_queue: None) -> None:
    out = tmp_path / "two-node.out"
    script = ("#!/bin/sh\n"
              "srun -N2 --ntasks-per-node=1 sh -c 'echo $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES'\n")
    job_id = actions.submit(script, SubmitOptions(name="two-node", nodes=2, gres="gpu:2",
                                                  output=str(out), workdir=str(tmp_path)))
    def finished() -> bool:
        # Without accounting, slurmctld forgets a completed job almost at once.
        jobs = [j for j in adapter.jobs() if j.job_id == job_id]
        return (not jobs or jobs[0].state == "COMPLETED") and out.exists() \
            and len(out.read_text().splitlines()) >= 2

    wait("the two-node job to finish", finished)
    lines = sorted(line for line in out.read_text().splitlines() if line.strip())
    assert lines == ["node1 0,1", "node2 0,1"]


def test_collector_matches_sinfo_and_squeue(slurm_cluster: LocalSlurmCluster,
                                            actions: SlurmActions, adapter: SlurmAdapter,
                                            wait: Wait, clean_queue: None) -> None:
    wide = actions.submit(SLEEP, SubmitOptions(name="wide", nodes=2, gres="gpu:2",
                                               nodelist=("node1", "node2"),
                                               comment="gpuwarden:profile=inference"))
    one = actions.submit(SLEEP, SubmitOptions(name="one", gres="gpu:1", nodelist=("node3",)))
    wait("both jobs running", lambda: sum(j.is_running for j in adapter.jobs()) == 2)
    for _ in range(3):
        actions.submit(SLEEP, SubmitOptions(name="waits", gres="gpu:2"))
    wait("Resources and Priority pending reasons",
         lambda: {"Resources", "Priority"} <= {j.reason for j in adapter.jobs()})

    collector = SlurmCollector(adapter, interval=1.0)

    def agreed():
        """A snapshot and squeue's own pending reasons read back to back that agree: the
        scheduler may re-evaluate a reason (Resources <-> Priority) between two reads."""
        snap = collector.collect_once()
        reg = registry_for(collector)
        reasons = Counter(_plain(adapter, "squeue", ["-h", "-t", "PD", "-o", "%r"]))
        same = all(reg.get_sample_value("slurm_jobs_pending", {"reason": r}) == n
                   for r, n in reasons.items())
        return (snap, reg, reasons) if same else None

    snap, registry, squeue_reasons = wait("the collector and squeue agree", agreed)
    assert snap.up and not snap.errors
    value = registry.get_sample_value

    # What the plain commands say, read independently of the collector's parsers.
    used = _plain(adapter, "sinfo", ["-h", "-N", "-o", "%N %G %C"])
    total_gpus = sum(int(line.split()[1].split(":")[-1]) for line in used)
    running = _plain(adapter, "squeue", ["-h", "-t", "R", "-o", "%i %b %D"])
    gpus_alloc = sum(int(b.split(":")[-1]) * int(d) for _, b, d in (r.split() for r in running))
    cpus = [int(x) for x in used[0].split()[2].split("/")]
    cpus_alloc = sum(int(line.split()[2].split("/")[0]) for line in used)

    assert value("slurm_gpus_total") == total_gpus == 6
    assert value("slurm_gpus_alloc") == gpus_alloc == 5
    assert value("slurm_gpus_idle") == value("slurm_gpus_free") == 1
    assert value("slurm_cpus_alloc") == cpus_alloc
    assert value("slurm_cpus_total") == cpus[3] * 3
    assert value("slurm_queue_pending") == sum(squeue_reasons.values()) == 3
    assert value("slurm_queue_running") == len(running) == 2
    for reason, count in squeue_reasons.items():
        assert value("slurm_jobs_pending", {"reason": reason}) == count
    # both were seen above; "None" is a job the scheduler is re-evaluating right now
    assert set(squeue_reasons) <= {"Resources", "Priority", "None"}
    assert value("slurm_node_gpus_alloc", {"node": "node3"}) == 1
    assert value("slurm_node_gpus_free", {"node": "node3"}) == 1
    assert value("slurm_partition_gpus_alloc", {"partition": "gpu"}) == 5
    assert value("slurm_nodes_mix") == 3
    assert value("slurm_jobs", {"state": "pending", "partition": "gpu", "user": "root"}) == 3
    assert value("slurm_up") == 1
    assert value("slurm_collector_errors_total", {"command": "squeue"}) == 0
    assert value("slurm_scheduler_threads") > 0

    # Which job holds which GPU index.
    wide_ref = snap.job(wide)
    assert wide_ref is not None
    for node in ("node1", "node2"):
        allocs = gpu_allocations(snap, node)
        assert sorted(allocs) == [0, 1]
        assert {a.job_id for a in allocs.values()} == {wide}
        assert gpu_profiles(snap, node) == {0: "inference", 1: "inference"}
    node3 = gpu_allocations(snap, "node3")
    assert list(node3.values()) == [JobRef(job_id=one, user="root", partition="gpu",
                                           name="one")]
    assert list(gpu_profiles(snap, "node3").values()) == ["train"]
    text = generate_latest(registry).decode()
    for reason in squeue_reasons:  # what squeue said, in the agreed snapshot
        assert f'slurm_jobs_pending{{reason="{reason}"}}' in text


def _plain(adapter: SlurmAdapter, command: str, args: list[str]) -> list[str]:
    return [line.strip() for line in adapter.run(command, args).stdout.splitlines()
            if line.strip()]


def test_drain_with_reason_shows_in_metrics(actions: SlurmActions, adapter: SlurmAdapter,
                                            wait: Wait, clean_queue: None) -> None:
    collector = SlurmCollector(adapter)
    registry = registry_for(collector)
    actions.drain("node2", "gpuwarden test: fan failure")
    collector.collect_once()
    labels = {"node": "node2", "state": "drained", "reason": "gpuwarden test: fan failure"}
    assert registry.get_sample_value("slurm_node_state", labels) == 1
    assert registry.get_sample_value("slurm_nodes_drain") == 1
    assert registry.get_sample_value("slurm_nodes_idle") == 2
    assert registry.get_sample_value("slurm_node_reason_timestamp_seconds",
                                     {"node": "node2"}) > 0
    actions.resume("node2")
    snap = collector.collect_once()
    node = snap.node("node2")
    assert node is not None and node.state == "idle" and not node.reason
    assert registry.get_sample_value("slurm_nodes_drain") == 0


def test_hold_release_cancel(actions: SlurmActions, adapter: SlurmAdapter, wait: Wait,
                             clean_queue: None) -> None:
    def state(job_id: int) -> str:
        jobs = [j for j in adapter.jobs() if j.job_id == job_id]
        return f"{jobs[0].state}/{jobs[0].reason}" if jobs else "gone"

    everything = actions.submit(SLEEP, SubmitOptions(name="all-gpus", nodes=3, gres="gpu:2",
                                                     hold=True, time="10"))
    assert state(everything) == "PENDING/JobHeldUser"
    actions.release(everything)
    wait("the released job to run", lambda: state(everything) == "RUNNING/None")

    waiting = actions.submit(SLEEP, SubmitOptions(name="waiting", gres="gpu:1"))
    wait("the second job to pend", lambda: state(waiting) in ("PENDING/Resources",
                                                              "PENDING/Priority"))
    actions.hold(waiting)
    wait("the hold", lambda: state(waiting).startswith("PENDING/JobHeld"))
    actions.release(waiting)
    wait("the release", lambda: not state(waiting).startswith("PENDING/JobHeld"))

    actions.cancel(everything)
    wait("the waiting job to start", lambda: state(waiting) == "RUNNING/None")
    actions.cancel(waiting)
    wait("both jobs cancelled", lambda: all(state(j).startswith(("CANCELLED", "gone"))
                                            for j in (everything, waiting)))
    with pytest.raises(BadRequest):
        actions.cancel(999999)


class RecordingRunner:
    """The real runner, remembering what it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self._real = SubprocessRunner()

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float,
                 stdin: str | None = None) -> CommandResult:
        self.calls.append(tuple(argv))
        return self._real(argv, env=env, timeout=timeout, stdin=stdin)


def test_bad_arguments_are_refused(slurm_cluster: LocalSlurmCluster) -> None:
    runner = RecordingRunner()
    actions = SlurmActions(SlurmAdapter(env=slurm_cluster.env(), runner=runner))
    for bad in ("1; rm -rf /", "-1", 0, "", "1 2", True, 1.5, "$(reboot)"):
        with pytest.raises(ValidationError) as err:
            actions.cancel(bad)  # type: ignore[arg-type]
        assert err.value.field == "job_id"
    with pytest.raises(ValidationError) as err:
        actions.hold("1; rm -rf /")
    assert "positive integer" in str(err.value)
    assert runner.calls == []  # nothing ran at all

    with pytest.raises(ValidationError) as err:
        actions.drain("node9", "broken")
    assert err.value.field == "node" and "node1, node2, node3" in err.value.fix
    with pytest.raises(ValidationError) as err:
        actions.resume("node1; reboot")
    assert err.value.field == "node"
    with pytest.raises(ValidationError) as err:
        actions.drain("node1", "line one\nline two")
    assert err.value.field == "reason"
    with pytest.raises(ValidationError) as err:  # scontrol would store 'fan "noise'
        actions.drain("node1", 'fan "noise"')
    assert err.value.field == "reason" and "single quotes" in err.value.fix
    with pytest.raises(ValidationError) as err:
        actions.submit(SLEEP, SubmitOptions(partition="nope"))
    assert err.value.field == "partition" and "gpu" in err.value.fix
    with pytest.raises(ValidationError) as err:
        actions.submit(SLEEP, SubmitOptions(nodelist=("node1", "node7")))
    assert err.value.field == "nodelist"
    with pytest.raises(ValidationError) as err:
        actions.submit("sleep 1", SubmitOptions())
    assert err.value.field == "script"
    with pytest.raises(ValidationError) as err:
        actions.submit(SLEEP, SubmitOptions(gres="gpu:2 --uid=0"))
    assert err.value.field == "gres"
    # Only sinfo (to learn the node and partition names) ran; no action reached Slurm.
    assert {call[0] for call in runner.calls} == {"sinfo"}


def test_killed_slurmd_turns_node_down_while_slurm_stays_up(
        slurm_cluster: LocalSlurmCluster, adapter: SlurmAdapter, wait: Wait,
        clean_queue: None) -> None:
    collector = SlurmCollector(adapter, interval=0.5)
    registry = registry_for(collector)
    collector.start()
    try:
        wait("a first snapshot", collector.latest)
        slurm_cluster.kill_node("node3")
        seen: list[bool] = []

        def node3_down() -> bool:
            snap = collector.latest()
            assert snap is not None
            seen.append(snap.up)
            node = snap.node("node3")
            return node is not None and node.state == "down"

        # slurmctld notices after about SlurmdTimeout plus its ping cycle.
        wait("node3 down", node3_down, timeout=60, interval=0.5)
        assert all(seen), "slurm_up dropped while only a slurmd was dead"
        assert registry.get_sample_value("slurm_up") == 1
        assert registry.get_sample_value("slurm_nodes_down") == 1
        assert registry.get_sample_value(
            "slurm_node_state",
            {"node": "node3", "state": "down", "reason": "Not responding"}) == 1
        assert registry.get_sample_value("slurm_collector_errors_total",
                                         {"command": "sinfo"}) == 0
    finally:
        collector.stop()
        slurm_cluster.start_node("node3")
    slurm_cluster.wait_nodes("idle", timeout_s=30)
    assert not collector.running


def test_a_step_runs_across_nodes_and_returns_what_it_printed(
        slurm_cluster: LocalSlurmCluster, clean_queue: None) -> None:
    """``SlurmActions.step`` (the cross-node NCCL check's srun): tasks on every named node,
    the GPUs asked for, the output and status returned whatever the status, a busy node
    refused at once, bad arguments refused before anything runs."""
    import sys

    from gpuwarden.checks.remote import _NOT_FREE
    from tests.waiting import wait_until

    runner = RecordingRunner()
    actions = SlurmActions(SlurmAdapter(env=slurm_cluster.env(), runner=runner))
    show = [sys.executable, "-c", "import os; print(os.environ['SLURMD_NODENAME'], "
            "os.environ['SLURM_PROCID'], os.environ.get('CUDA_VISIBLE_DEVICES'))"]
    done = actions.step(["node1", "node3"], 2, show, gpus_per_node=2, timeout=60)
    assert done.returncode == 0, done.stderr
    tasks = sorted(line.split() for line in done.stdout.splitlines())
    assert [(t[0], t[1]) for t in tasks] == [("node1", "0"), ("node1", "1"), ("node3", "2"),
                                             ("node3", "3")], done.stdout
    assert {t[2] for t in tasks} == {"0,1"}  # both GPUs of each node, to every rank
    failed = actions.step(["node1", "node2"], 1, [sys.executable, "-c",
                                                  "print('half way'); raise SystemExit(3)"],
                          timeout=60)
    assert failed.returncode != 0 and "half way" in failed.stdout  # returned, not raised
    # a node with a job: the step gives up (--immediate) instead of waiting or sharing it
    busy = actions.submit(SLEEP, SubmitOptions(name="busy", gres="gpu:1", nodelist=("node2",)))
    wait_until("the busy job runs", lambda: next(
        j for j in actions.adapter.jobs() if j.job_id == busy).state == "RUNNING")
    refused = actions.step(["node1", "node2"], 1, ["true"], gpus_per_node=1, wait=1,
                           timeout=60)
    assert refused.returncode != 0
    assert any(words in refused.stderr for words in _NOT_FREE), refused.stderr
    ran = len(runner.calls)
    for nodes, fix_field in ((["node1", "node9"], "nodes[1]"), (["node1", "node1"], "nodes"),
                             ([], "nodes")):
        with pytest.raises(ValidationError) as err:
            actions.step(nodes, 1, ["true"])
        assert err.value.field == fix_field
    with pytest.raises(ValidationError) as err:
        actions.step(["node1", "node2"], 1, ["true"], mpi="pmix; reboot")
    assert err.value.field == "mpi"
    with pytest.raises(ValidationError) as err:
        actions.step(["node1", "node2"], 1, ["true"], job_id="1; reboot")
    assert err.value.field == "job_id"
    assert [c[0] for c in runner.calls[ran:]] == ["sinfo"] * 5  # validated: no srun ran
