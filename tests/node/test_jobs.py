from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuwarden.node.jobs import JobRef, ProcJobMapper, merge_jobs


def fake_proc(root: Path, pid: int, *, cgroup: str = "0::/\n", environ: dict | None = None,
              start: int = 1000) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    fields = ["S"] + ["0"] * 18 + [str(start)]
    (d / "stat").write_text(f"{pid} (python3) {' '.join(fields)} 0 0\n")
    (d / "cgroup").write_text(cgroup)
    env = environ or {}
    (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))


def test_cgroup_v1_and_v2_job_paths(tmp_path):
    fake_proc(tmp_path, 10,
              cgroup="0::/system.slice/slurmstepd.scope/job_4711/step_0/user/task_0\n")
    fake_proc(tmp_path, 11, cgroup="12:devices:/slurm/uid_1000/job_52/step_batch\n"
                                   "11:memory:/slurm/uid_1000/job_52/step_batch\n")
    mapper = ProcJobMapper(tmp_path)
    assert mapper.job_for_pid(10).job_id == "4711"
    assert mapper.job_for_pid(11).job_id == "52"


def test_environ_fallback_and_no_job(tmp_path):
    fake_proc(tmp_path, 20, environ={"SLURM_JOB_ID": "99", "SLURM_JOB_USER": "alice",
                                     "SLURM_JOB_PARTITION": "gpu"})
    fake_proc(tmp_path, 21, environ={"HOME": "/root"})
    fake_proc(tmp_path, 22, environ={"SLURM_JOB_ID": "1; rm -rf /"})
    mapper = ProcJobMapper(tmp_path)
    assert mapper.job_for_pid(20) == JobRef("99", user="alice", partition="gpu")
    assert mapper.job_for_pid(21) is None
    assert mapper.job_for_pid(22) is None  # not a job id
    assert mapper.job_for_pid(23) is None  # gone


def test_reused_pid_is_looked_up_again(tmp_path):
    fake_proc(tmp_path, 30, environ={"SLURM_JOB_ID": "1"}, start=100)
    mapper = ProcJobMapper(tmp_path)
    assert mapper.job_for_pid(30).job_id == "1"
    import shutil
    shutil.rmtree(tmp_path / "30")
    fake_proc(tmp_path, 30, environ={"SLURM_JOB_ID": "2"}, start=200)
    assert mapper.job_for_pid(30).job_id == "2"


def test_real_proc_of_this_process_has_no_job():
    if "SLURM_JOB_ID" in os.environ:
        pytest.skip("running inside a Slurm job (/proc/self/environ keeps its SLURM_JOB_ID)")
    assert ProcJobMapper().job_for_pid(os.getpid()) is None


def test_merge_keeps_allocated_gpus_without_process():
    by_process = {0: [JobRef("5", user="alice")]}
    allocations = {0: [JobRef("5", user="alice", partition="gpu", source="slurm")],
                   1: [JobRef("5", user="alice", partition="gpu", source="slurm")],
                   2: [JobRef("6", user="bob", partition="gpu", source="slurm")]}
    merged = merge_jobs(by_process, allocations)
    assert merged[0] == (JobRef("5", "alice", "gpu", source="process"),)
    assert merged[1] == (JobRef("5", "alice", "gpu", source="slurm"),)
    assert merged[2][0].source == "slurm"
    assert merge_jobs({}, {}) == {}
