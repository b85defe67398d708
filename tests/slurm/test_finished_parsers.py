"""Finished jobs: sacct's text and JSON shapes, and Slurm 23.02+ (data_parser v0.0.39+)
JSON, all read into the same :class:`SlurmJob`.

``sacct_parsable2.txt`` and ``sacct_v0.0.38.json`` were recorded from the real local cluster
with accounting (tests/slurm/record_samples.py, Slurm 22.05.8). This machine cannot run
Slurm 23.02+, so ``sacct_v0.0.39.json``, ``sacct_v0.0.40.json``, ``squeue_v0.0.40.json`` and
``sinfo_v0.0.40.json`` are written by hand from the documented data_parser schemas
(slurmrestd's OpenAPI for v0.0.39 and v0.0.40: numbers as ``{set, infinite, number}``,
states and exit statuses as flag lists from v0.0.40), replaying the recorded scenario plus
a job that hit its time limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.slurm.errors import AccountingDisabled, ParseError, classify_failure
from gpuwarden.slurm.model import SlurmJob
from gpuwarden.slurm.parsers import DataParserShape, parse_job_exit_codes, parse_sacct
from gpuwarden.slurm.parsers.data_parser import number, parse_sacct_jobs
from gpuwarden.slurm.parsers.sacct import gpus_in_alloc_tres, parse_exit_code, split_state
from gpuwarden.slurm.parsers.v0_0_38 import decode_wait_status
from gpuwarden.slurm.parsers.v0_0_38 import parse_sacct_jobs as parse_sacct_v0038

DATA = Path(__file__).parent / "data"
T = 1796163948  # the recorded scenario's submit time

# job id -> (name, state, exit code, signal, nodes, GPUs, start, end) as sacct printed it
RECORDED = {
    8: ("ok", "COMPLETED", 0, 0, ("node1",), 1, T + 2, T + 2),
    9: ("exit 3", "FAILED", 3, 0, ("node1",), 0, T + 2, T + 2),
    10: ("killed", "FAILED", 0, 9, ("node2",), 0, T + 2, T + 2),
    11: ("two gpus", "COMPLETED", 0, 0, ("node1", "node2"), 4, T + 5, T + 5),
    12: ("arr", "COMPLETED", 0, 0, ("node3",), 0, T + 2, T + 2),
    13: ("cancelled", "CANCELLED", 0, 0, ("node1",), 0, T + 5, T + 5),
}


def read(name: str) -> str:
    return (DATA / name).read_text()


def facts(job: SlurmJob) -> tuple[object, ...]:
    return (job.name, job.state, job.exit_code, job.signal, job.nodes, job.alloc_gpus,
            job.start_time, job.end_time)


def test_sacct_text_recorded() -> None:
    jobs = {j.job_id: j for j in parse_sacct(read("sacct_parsable2.txt"))}
    for job_id, want in RECORDED.items():
        assert facts(jobs[job_id]) == want, job_id
    ok = jobs[8]
    assert (ok.user, ok.account, ok.partition, ok.source) == ("root", "root", "gpu", "sacct")
    assert ok.elapsed_s == 0 and ok.time_limit_s is None and ok.submit_time == T
    assert (jobs[12].array_job_id, jobs[12].array_task_id) == (12, "2")
    assert jobs[12].key == "12_2" and jobs[8].key == "8"
    assert all(j.is_finished and not j.is_running for j in jobs.values())
    # Slurm 22.05 wrote array task 12_1 as a nameless "allocation" record at first (its
    # submit reached slurmdbd after its start); kept as sacct printed it
    assert jobs[14].name == "allocation" and jobs[14].partition == ""


def test_sacct_json_v0038_recorded_agrees_but_for_its_exit_codes() -> None:
    text = {j.job_id: j for j in parse_sacct(read("sacct_parsable2.txt"))}
    doc = {j.job_id: j for j in parse_sacct_v0038(read("sacct_v0.0.38.json"))}
    assert set(doc) == set(RECORDED)
    for job_id, job in doc.items():
        same = ("name", "state", "signal", "nodes", "alloc_gpus", "start_time", "end_time",
                "user", "partition", "num_nodes", "array_job_id", "array_task_id")
        assert {f: getattr(job, f) for f in same} == {f: getattr(text[job_id], f)
                                                      for f in same}, job_id
    # 22.05's JSON says return_code 0 for a script that exited 3 (sacct -o ExitCode: 3:0):
    # one more reason the collector reads the text
    assert doc[9].exit_code == 0 and text[9].exit_code == 3


@pytest.mark.parametrize("name", ["sacct_v0.0.39.json", "sacct_v0.0.40.json"])
def test_sacct_data_parser_json(name: str) -> None:
    jobs = {j.job_id: j for j in parse_sacct_jobs(read(name))}
    for job_id, want in RECORDED.items():
        got = facts(jobs[job_id])
        if job_id == 13:  # the hand-written cancel lands 2 s after its start
            want = (*want[:6], T + 3, T + 5)
        assert got == want, (name, job_id)
    slow = jobs[15]
    assert (slow.state, slow.time_limit_s, slow.elapsed_s, slow.alloc_gpus) == (
        "TIMEOUT", 60, 91, 1)
    assert jobs[12].array_task_id == "2" and jobs[8].time_limit_s is None
    assert jobs[8].account == "gpuwarden" and jobs[8].source == "sacct"


def test_squeue_and_sinfo_v0040() -> None:
    shape = DataParserShape()
    jobs = {j.job_id: j for j in shape.parse_jobs(read("squeue_v0.0.40.json"))}
    train = jobs[21]
    assert train.is_running and train.nodes == ("node1", "node2") and train.num_nodes == 2
    assert dict(train.gpu_detail) == {"node1": (0, 1), "node2": (1,)}
    assert train.gpus_allocated == 3 and train.time_limit_s == 3600
    assert train.end_time is None and train.exit_code is None  # running: no end yet
    assert train.comment == "gpuwarden:profile=train"
    waits = jobs[22]
    assert waits.is_pending and waits.reason == "Resources" and waits.start_time is None
    assert waits.time_limit_s is None and waits.gpus_requested == 1
    ok, failed, task = jobs[23], jobs[24], jobs[26]
    assert (ok.state, ok.exit_code, ok.signal, ok.alloc_gpus) == ("COMPLETED", 0, 0, 1)
    assert (failed.state, failed.exit_code, failed.reason) == ("FAILED", 3, "NonZeroExitCode")
    assert failed.end_time == T + 91 and failed.source == "squeue"
    assert (task.array_job_id, task.array_task_id, task.key) == (25, "1", "25_1")
    nodes = {n.name: n for n in shape.parse_nodes(read("sinfo_v0.0.40.json")).nodes}
    assert nodes["node1"].state == "mixed" and nodes["node1"].gpus_alloc == 2
    assert nodes["node2"].state == "draining" and nodes["node2"].reason == "bad fan"
    assert not nodes["node2"].usable and nodes["node2"].reason_user == "root"
    assert nodes["node3"].gpus_idle == 2
    assert nodes["node4"].state == "down" and "NOT_RESPONDING" in nodes["node4"].flags
    assert nodes["node4"].cpus_idle == 0


def test_value_parsers_and_refusals() -> None:
    assert split_state("CANCELLED by 0") == "CANCELLED"
    assert parse_exit_code("0:9") == (0, 9) and parse_exit_code("") == (None, None)
    assert gpus_in_alloc_tres("billing=2,cpu=2,gres/gpu=4,node=2") == 4
    assert gpus_in_alloc_tres("cpu=1,gres/gpu:a100=2,gres/gpu:h100=1") == 3
    assert gpus_in_alloc_tres("cpu=1,node=1") == 0 and gpus_in_alloc_tres("") is None
    assert decode_wait_status(768) == (3, 0) and decode_wait_status(9) == (0, 9)
    assert number({"set": False, "infinite": False, "number": 5}) is None
    assert number({"set": True, "infinite": True, "number": 0}) is None
    assert number({"set": True, "infinite": False, "number": 5}) == 5 and number(7) == 7
    assert parse_job_exit_codes("JobId=5 JobName=x ExitCode=2:0 Reboot=0\n") == {5: (2, 0)}
    with pytest.raises(ParseError):
        parse_sacct_jobs(read("sacct_v0.0.38.json"))  # not a data_parser document
    with pytest.raises(ParseError):
        parse_sacct_v0038(read("sacct_v0.0.40.json"))
    with pytest.raises(ParseError):
        parse_sacct("1\x1f2\n")  # truncated record
    # a job name with a newline spans two lines and is read back whole
    line = read("sacct_parsable2.txt").splitlines()[0].replace("\x1fok\x1f", "\x1fo\nk\x1f")
    assert parse_sacct(line + "\n")[0].name == "o\nk"
    disabled = classify_failure(["sacct"], 1, "Slurm accounting storage is disabled\n")
    assert isinstance(disabled, AccountingDisabled)


def test_collector_merges_squeue_and_sacct() -> None:
    """squeue's queue (recorded: running and pending jobs 1-7) and sacct's finished jobs
    (recorded: 8-14): a job both know is sacct's record; one only sacct knows (finished
    longer than MinJobAge ago) is added; queue metrics count only what squeue listed."""
    from dataclasses import replace

    from gpuwarden.slurm import SlurmAdapter, SlurmCollector
    from gpuwarden.slurm.model import SlurmSnapshot
    from gpuwarden.slurm.parsers import FieldFormatShape

    def no_commands(argv, **kw):  # the merge must not need Slurm for these jobs
        raise AssertionError(f"ran {argv}")

    collector = SlurmCollector(SlurmAdapter(runner=no_commands, inherit_env=False))
    finished = parse_sacct(read("sacct_parsable2.txt"))
    collector._accounting = True
    collector._finished = {j.job_id: j for j in finished}
    queue = FieldFormatShape().parse_jobs(read("squeue_format.txt"))
    # squeue still lists job 9 (within MinJobAge), without an exit code
    listed_9 = replace(collector._finished[9], source="squeue", exit_code=None, signal=None,
                       elapsed_s=None, alloc_gpus=None)
    merged = collector._merge_finished([*queue, listed_9], 0.0, lambda c, f: f())
    by_id = {}
    for job in merged:
        by_id.setdefault(job.job_id, []).append(job)
    assert by_id[9] == [collector._finished[9]] and by_id[9][0].exit_code == 3
    assert {j.job_id for j in finished} <= set(by_id)
    assert all(j.source == "squeue" for j in queue) and len(merged) == len(queue) + len(finished)
    snap = SlurmSnapshot(collected_at=0.0, duration_s=0.0, up=True, jobs=tuple(merged),
                         accounting=True, listed=frozenset(j.job_id for j in [*queue, listed_9]))
    assert {j.job_id for j in snap.queue_jobs} == {j.job_id for j in queue} | {9}
    assert snap.finished_source == "sacct"
