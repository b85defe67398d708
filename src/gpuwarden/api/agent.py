"""``/api/v1/agent``: ask the ops agent (viewer), stream its answer, decide on the actions it
proposes (operator; the decision names the digest of the exact arguments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from gpuwarden.agent.models import AgentStatus, Decisions, NewRun, RunView
from gpuwarden.api.auth import require
from gpuwarden.api.problems import PROBLEMS, problems
from gpuwarden.state.tokens import Principal

Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]
Stream = Annotated[bool, Query(description="answer as server-sent events: run, text, "
                                           "tool_call, tool_result, approval_required, "
                                           "refused, error, end")]
SSE = {200: {"content": {"application/json": {}, "text/event-stream": {}},
             "description": "the run (JSON), or its events (stream=true)"}}


def service(request: Request):  # -> AgentService, built on first use (it loads pydantic-ai)
    state = request.app.state
    if getattr(state, "agent", None) is None:
        from gpuwarden.agent.service import AgentService

        agent = AgentService(state.cp, model=state.agent_model)
        agent.fail_interrupted()  # nothing drives a run an earlier serve left running
        state.agent = agent
    return state.agent


Agent = Annotated[Any, Depends(service)]


def stream(fn):
    from gpuwarden.agent.service import stream as run_stream

    return run_stream(fn)


def _identity(who: Principal) -> str:
    return f"{who.name or 'token ' + str(who.token_id)} ({who.role})"


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _streaming(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(_sse(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def build_agent_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/agent", tags=["agent"], responses=PROBLEMS)

    @r.get("", response_model=AgentStatus)
    def agent_status(agent: Agent, who: Viewer) -> AgentStatus:
        return agent.status()

    @r.post("/runs", response_model=RunView, responses={**SSE, **problems(400, 503)})
    async def create_run(body: NewRun, agent: Agent, who: Viewer, stream_: Annotated[
            bool, Query(alias="stream")] = False):
        identity = _identity(who)
        if stream_:
            return _streaming(stream(lambda emit: agent.ask(body.prompt, identity, emit)))
        return await agent.ask(body.prompt, identity)

    @r.get("/runs", response_model=list[RunView])
    def list_runs(agent: Agent, who: Viewer,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[RunView]:
        return agent.list(limit)

    @r.get("/runs/{run_id}", response_model=RunView, responses=problems(404))
    def get_run(run_id: RunId, agent: Agent, who: Viewer) -> RunView:
        return agent.get(run_id)

    @r.post("/runs/{run_id}/decisions", response_model=RunView,
            responses={**SSE, **problems(400, 404, 409, 503)})
    async def decide(run_id: RunId, body: Decisions, agent: Agent, who: Operator,
                     stream_: Annotated[bool, Query(alias="stream")] = False):
        identity = _identity(who)
        if stream_:
            agent.get(run_id)  # 404 before the stream starts
            return _streaming(stream(
                lambda emit: agent.decide(run_id, body.decisions, identity, emit)))
        return await agent.decide(run_id, body.decisions, identity)

    return r
