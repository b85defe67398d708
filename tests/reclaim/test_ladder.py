"""The ladder's judgements as pure functions: idle, busy or unknown from each GPU's peak;
``busy_fraction``; exemptions; the next step and its time (a late warning keeps its notice)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpuwarden.config import JobReclaimConfig, ServeConfig
from gpuwarden.reclaim.ladder import activity, exemption, in_grace, job_facts, next_step
from gpuwarden.slurm.model import SlurmJob

EIGHT = [("n1", i) for i in range(8)]


def policy(**kw) -> JobReclaimConfig:
    return JobReclaimConfig.model_validate(
        {"warn_after": ["60m", "105m"], "act_after": "120m", **kw})


def test_missing_data_is_never_idleness_and_any_busy_gpu_keeps_a_job_by_default():
    p = policy(idle_below=5)
    peaks = {g: 0.0 for g in EIGHT}
    assert activity(EIGHT, peaks, p)[0] == "idle"
    assert activity(EIGHT, {**peaks, ("n1", 3): 4.9}, p)[0] == "idle"  # stalled at 4.9 %
    assert activity(EIGHT, {**peaks, ("n1", 3): 5.0}, p)[0] == "busy"
    state, why = activity(EIGHT, {**peaks, ("n1", 7): None}, p)
    assert state == "unknown" and "n1/gpu7" in why
    assert activity(EIGHT, {g: 0.0 for g in EIGHT[:7]}, p)[0] == "unknown"  # one not reported


def test_busy_fraction_keeps_seven_busy_gpus_of_eight_but_not_one():
    p = policy(busy_fraction=0.8)
    seven = {g: (90.0 if g[1] < 7 else 0.0) for g in EIGHT}
    one = {g: (90.0 if g[1] == 0 else 0.0) for g in EIGHT}
    assert activity(EIGHT, seven, p)[0] == "busy"
    assert activity(EIGHT, one, p)[0] == "idle"
    assert activity(EIGHT, {**one, ("n1", 5): None}, p)[0] == "unknown"


def doc(**kw) -> SlurmJob:
    fields = {"job_id": 42, "state": "RUNNING", "name": "train", "user": "bob",
              "partition": "gpu", "account": "lab", "comment": "", "start_time": 1000.0,
              "time_limit_s": 7200, "gpu_detail": {"node1": (0, 1)}, **kw}
    return SlurmJob(**fields)


def test_exemptions_name_their_reason():
    p = policy(exempt={"users": ["alice"], "partitions": ["debug"], "names": ["keep-*"],
                       "interactive": {"max_hours": 8, "max_gpus": 1}})
    now = 2000.0
    facts = job_facts(doc(), {})
    assert facts is not None and facts.gpus == (("node1", 0), ("node1", 1))
    assert exemption(facts, p, now) is None
    assert "alice" in exemption(job_facts(doc(user="alice"), {}), p, now)
    assert "debug" in exemption(job_facts(doc(partition="debug"), {}), p, now)
    assert "keep-x" in exemption(job_facts(doc(name="keep-x"), {}), p, now)
    assert "gpuwarden:keep" in exemption(job_facts(doc(comment="a gpuwarden:keep b"), {}),
                                         p, now)
    one_gpu = {"node1": (0,)}
    assert "interactive" in exemption(job_facts(doc(name="bash", gpu_detail=one_gpu), {}),
                                      p, now)
    assert exemption(job_facts(doc(name="bash"), {}), p, now) is None  # 2 GPUs: over the limit
    late = 1000.0 + 9 * 3600
    assert exemption(job_facts(doc(name="bash", gpu_detail=one_gpu), {}), p, late) is None
    refused = policy(exempt={"keep_comment": None})
    assert exemption(job_facts(doc(comment="gpuwarden:keep"), {}), refused, now) is None
    assert job_facts(doc(state="PENDING"), {}) is None
    # gpuwarden's own health-check holder (root's; with GPUs while the NCCL step runs in it)
    holder = doc(name="gpuwarden-check", user="root")
    assert "health-check holder" in exemption(job_facts(holder, {}), p, now)
    assert exemption(job_facts(doc(name="gpuwarden-check"), {}), p, now) is None  # bob's
    assert job_facts(doc(gpu_detail={}), {}) is None
    assert job_facts(doc(array_job_id=40, array_task_id="2"), {}).key == "40_2"
    assert in_grace(facts, policy(grace="10m"), 1000.0 + 599)
    assert not in_grace(facts, policy(grace="10m"), 1000.0 + 601)


def test_steps_follow_the_ladder_and_a_late_warning_keeps_its_notice():
    p = policy()
    assert next_step(p, 0.0, 0, None) == (s := next_step(p, 0.0, 0, None))
    assert (s.event, s.number, s.due_at) == ("warn", 1, 3600.0)
    assert next_step(p, 0.0, 1, 3600.0).due_at == 6300.0
    act = next_step(p, 0.0, 2, 6300.0)
    assert (act.event, act.due_at) == ("act", 7200.0)
    # the second warning went out late (at 7000 s): the action waits its 15 minutes
    assert next_step(p, 0.0, 2, 7000.0).due_at == 7000.0 + 900.0


def test_a_ladder_that_does_not_rise_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="warn_after must rise"):
        ServeConfig.model_validate({"reclaim": {"jobs": {"warn_after": ["10m", "5m"],
                                                         "act_after": "20m"}}})
    with pytest.raises(ValidationError, match="not a duration"):
        ServeConfig.model_validate({"reclaim": {"jobs": {"act_after": "soon"}}})
    assert ServeConfig().reclaim.jobs is None  # nothing is reclaimed unless configured
    assert policy().mode == "dry-run"
