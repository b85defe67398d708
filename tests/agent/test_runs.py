"""The agent with scripted models (pydantic-ai's FunctionModel, no network) on the live
cluster: which tools are called with which arguments, every action stops for approval, a
denied, unapproved or differently-approved call never executes, an approved one executes
under the approver's identity and is audited."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import httpx
import pytest
from pydantic_ai import DeferredToolResults, ToolApproved

from gpuwarden.agent import actions
from gpuwarden.agent.models import Decision
from gpuwarden.agent.service import AgentService
from gpuwarden.agent.tools import AgentDeps, build_agent
from gpuwarden.errors import ConflictError
from gpuwarden.services import slurm
from gpuwarden.state.audit import AuditLog
from tests.agent.live import _submit, node
from tests.agent.scripted import ANSWER, Script

pytestmark = pytest.mark.slow


def held_job(live, name: str) -> int:
    body = {"script": "#!/bin/sh\nsleep 600\n", "name": name, "gres": "gpu:1", "hold": True,
            "time": "20"}
    job_id = asyncio.run(_submit(live.cp, body))
    deadline = time.monotonic() + 20
    while job_id not in {j.job_id for j in slurm.jobs(live.cp)}:
        assert time.monotonic() < deadline, f"job {job_id} never showed in the queue"
        time.sleep(0.3)
    return job_id


def in_queue(live, job_id: int) -> bool:
    """Straight from Slurm (squeue), not through gpuwarden's view of it."""
    out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                         text=True, env={**os.environ, "SLURM_CONF": str(live.slurm_conf)},
                         check=True)
    return out.stdout.strip() in ("PENDING", "RUNNING")


def run(coro):
    return asyncio.run(coro)


async def ask(live, script: Script, prompt: str, **limits):
    async with httpx.AsyncClient() as client:
        svc = AgentService(live.cp, model=script.model, client=client)
        old = live.cp.config.agent
        live.cp.config.agent = old.model_copy(update=limits)
        try:
            return svc, await svc.ask(prompt, "alice-operator (operator)")
        finally:
            live.cp.config.agent = old


async def decide(live, script: Script, run_id: str, decisions: list[Decision], who: str):
    async with httpx.AsyncClient() as client:
        svc = AgentService(live.cp, model=script.model, client=client)
        return await svc.decide(run_id, decisions, who)


def audit_for(live, target: str) -> list[dict]:
    return [e for e in AuditLog(live.cp.db).list(1000) if e["target"] == target]


def test_read_tools_are_called_with_their_arguments_and_the_answer_is_their_data(live):
    big = live.jobs["big-sweep"]
    script = Script([[("explain_pending", {"job_id": big}), ("waste_report", {})], ANSWER])
    _, view = run(ask(live, script, f"why is job {big} pending, and what is wasted?"))
    assert view.status == "done" and view.mode == "llm"
    assert "Resources" in view.answer and node(4) in view.answer
    assert "allocated to jobs but idle" in view.answer
    calls = [p for m in script.seen[-1] for p in m.parts if p.part_kind == "tool-call"]
    assert [(c.tool_name, c.args_as_dict()) for c in calls] == [
        ("explain_pending", {"job_id": big}), ("waste_report", {})]
    assert view.usage.requests == 2 and view.usage.input_tokens > 0
    assert view.usage.cost is None  # no prices configured: unknown, not zero
    assert {"cancel_job", "drain_node", "explain_pending", "query_metrics"} <= set(script.tools)


def test_every_action_stops_for_approval_and_a_denial_never_executes(live):
    job = held_job(live, "deny-me")
    script = Script([[("cancel_job", {"job_id": job, "reason": "asked"})], "ok"])
    _, view = run(ask(live, script, f"cancel job {job}"))
    assert view.status == "awaiting_approval"
    (call,) = view.calls
    assert (call.tool, call.args["job_id"], call.state) == ("cancel_job", job, "proposed")
    assert call.description == f"scancel {job}: cancel Slurm job {job}"
    assert in_queue(live, job)
    view = run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=False,
                                                       comment="not now")], "carol (operator)"))
    assert view.status == "done" and view.calls[0].state == "denied"
    assert view.calls[0].decided_by == "carol (operator)"
    assert in_queue(live, job) and audit_for(live, str(job)) == []
    # the model was told: the denial reached it as the tool's result
    assert "denied by carol (operator): not now" in script.sent_text()


def test_an_approval_for_other_arguments_does_not_execute(live):
    job = held_job(live, "bind-me")
    other = held_job(live, "bystander")
    script = Script([[("cancel_job", {"job_id": job})], "ok"])
    _, view = run(ask(live, script, f"cancel job {job}"))
    (call,) = view.calls
    wrong = actions.digest("cancel_job", actions.CancelArgs(job_id=other))
    with pytest.raises(ConflictError, match="digest"):
        run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=True,
                                                    digest=wrong)], "carol (operator)"))
    with pytest.raises(ConflictError):
        run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=True)],
                   "carol (operator)"))
    assert live.cp.db.connect().execute(
        "SELECT state FROM agent_calls WHERE call_id = ?", (call.call_id,)).fetchone()[0] \
        == "proposed"
    assert in_queue(live, job) and in_queue(live, other)

    # below the service: an approval whose arguments were swapped at resume time
    async def swapped() -> str:
        async with httpx.AsyncClient() as client:
            agent = build_agent(script.model)
            deps = AgentDeps(live.cp, client, "mallory", approved={call.call_id: call.digest})
            stored = json.loads(live.cp.db.connect().execute(
                "SELECT messages FROM agent_runs WHERE id = ?", (view.id,)).fetchone()[0])
            from pydantic_ai import ModelMessagesTypeAdapter

            history = ModelMessagesTypeAdapter.validate_python(stored["messages"])
            result = await agent.run(message_history=history, deps=deps,
                                     deferred_tool_results=DeferredToolResults(approvals={
                                         call.call_id: ToolApproved(
                                             override_args={"job_id": other})}))
            return deps.outcomes[call.call_id][0], result

    outcome, _ = run(swapped())
    assert outcome == "rejected"
    assert in_queue(live, job) and in_queue(live, other)
    assert audit_for(live, str(other)) == []


def test_an_approved_action_executes_under_the_approver_and_is_audited(live):
    job = held_job(live, "approve-me")
    script = Script([[("cancel_job", {"job_id": job})], ANSWER])
    _, view = run(ask(live, script, f"please cancel job {job}"))
    (call,) = view.calls
    view = run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=True,
                                                       digest=call.digest)],
                      "carol (operator)"))
    assert view.status == "done"
    assert view.calls[0].state == "executed", view.calls[0]
    assert f"DONE by carol (operator): job {job}: cancel done" in view.answer
    (entry,) = audit_for(live, str(job))
    assert (entry["actor"], entry["action"], entry["outcome"]) == (
        "carol (operator)", "cancel_job", "executed")
    deadline = time.monotonic() + 15
    while in_queue(live, job):
        assert time.monotonic() < deadline, "the approved cancel did not reach Slurm"
        time.sleep(0.3)
    # a second decision on a finished run is refused
    with pytest.raises(ConflictError):
        run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=True,
                                                    digest=call.digest)], "carol (operator)"))


def test_state_is_rechecked_at_execution(live):
    """Approved, but the node is already drained by then: nothing runs, the model is told."""
    script = Script([[("drain_node", {"node": node(5), "reason": "again"})], ANSWER])
    _, view = run(ask(live, script, f"drain {node(5)}"))
    (call,) = view.calls
    view = run(decide(live, script, view.id, [Decision(call_id=call.call_id, approve=True,
                                                       digest=call.digest)], "carol (operator)"))
    assert view.calls[0].state == "failed" and "already" in view.calls[0].result
    assert "FAILED (nothing changed)" in view.answer
    entry = audit_for(live, node(5))[0]
    assert (entry["actor"], entry["action"], entry["outcome"]) == (
        "carol (operator)", "drain_node", "not executed")


def test_an_action_the_user_did_not_ask_for_is_refused_before_anyone_sees_it(live):
    big = live.jobs["big-sweep"]
    script = Script([[("cancel_job", {"job_id": big})], [("explain_pending", {"job_id": big})],
                     ANSWER])
    _, view = run(ask(live, script, f"why is job {big} pending?"))
    assert view.status == "done"
    assert [c.state for c in view.calls] == ["rejected"]
    assert "the user did not ask for cancel_job" in script.sent_text()
    assert in_queue(live, big)


def test_usage_limits_stop_a_runaway_run(live):
    script = Script([[("cluster_overview", {})]])  # never answers
    _, view = run(ask(live, script, "how is the cluster?", request_limit=3))
    assert view.status == "failed" and "usage limit" in view.error
    assert view.usage.requests == 3


def test_the_api_roles_and_the_event_stream(live):
    job = held_job(live, "api-cancel")
    script = Script([[("slurm_jobs", {"state": "PENDING"})],
                     [("cancel_job", {"job_id": job})], ANSWER])
    live.app.state.agent = AgentService(live.cp, model=script.model)
    try:
        with live.api(live.viewer) as viewer, live.api() as operator:
            assert viewer.get("/api/v1/agent").json()["llm"] is True
            events = []
            with viewer.stream("POST", "/api/v1/agent/runs?stream=true",
                               json={"prompt": f"cancel job {job}"}) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
            kinds = [e["type"] for e in events]
            assert kinds[0] == "run" and kinds[-1] == "end"
            assert kinds.index("tool_call") < kinds.index("approval_required")
            (proposed,) = next(e for e in events if e["type"] == "approval_required")["calls"]
            run_id = events[0]["id"]
            decision = {"decisions": [{"call_id": proposed["call_id"], "approve": True,
                                       "digest": proposed["digest"]}]}
            r = viewer.post(f"/api/v1/agent/runs/{run_id}/decisions", json=decision)
            assert r.status_code == 403
            assert in_queue(live, job)
            bad = operator.post(f"/api/v1/agent/runs/{run_id}/decisions",
                                json={"decisions": [{"call_id": proposed["call_id"],
                                                     "approve": True, "digest": "0" * 64}]})
            assert bad.status_code == 409 and "digest" in bad.json()["detail"]
            r = operator.post(f"/api/v1/agent/runs/{run_id}/decisions", json=decision)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["calls"][0]["state"] == "executed"
            assert body["calls"][0]["decided_by"] == "alice-operator (operator)"
            assert operator.get(f"/api/v1/agent/runs/{run_id}").json()["status"] == "done"
            assert viewer.post("/api/v1/agent/runs", json={"prompt": ""}).status_code == 422
            assert viewer.get("/api/v1/agent/runs/zzz").status_code == 422
            assert viewer.get("/api/v1/agent/runs/0123456789ab").status_code == 404
            assert httpx.post(f"{live.url}/api/v1/agent/runs",
                              json={"prompt": "hi"}).status_code == 401
    finally:
        live.app.state.agent = None
