"""Agent runs: ask, stream, propose, approve or deny, resume.

A run is a row in the state database with its message history, usage and the actions it
proposed.  With no model configured a run is answered by the analyzers (``router``).  With a
model, a run that calls an action tool stops in ``awaiting_approval``; each proposed call is
stored with the digest of its canonical arguments.  A decision must name that digest (so an
approval given for other arguments is refused), is recorded with the decider, and once every
call of the batch is decided the run resumes under the approver's identity: approved calls
execute (the tool re-checks the approval and the cluster's state), denied ones never do.

Proposals the user did not ask for in their own words are refused before anyone sees them:
the model is told so and the run continues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic_ai import (
    AgentRunResultEvent,
    DeferredToolRequests,
    DeferredToolResults,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessagesTypeAdapter,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolDenied,
    UsageLimitExceeded,
    UsageLimits,
)
from pydantic_ai.exceptions import AgentRunError, ModelAPIError, UnexpectedModelBehavior

from gpuwarden.agent import actions, router
from gpuwarden.agent.fence import Fence
from gpuwarden.agent.models import (
    AgentStatus,
    Decision,
    ProposedCall,
    RunView,
    Usage,
)
from gpuwarden.agent.tools import AgentDeps, build_agent
from gpuwarden.config import AgentConfig
from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.services.context import ControlPlane

log = logging.getLogger(__name__)
MAX_REFUSALS = 3  # rounds of refusing unasked-for proposals before the run gives up
LOADED_AT = time.time()  # runs this process drives were all updated after this

Emit = Callable[[dict[str, Any]], Awaitable[None]]


async def _ignore(_: dict[str, Any]) -> None:
    return None


@dataclass
class AgentService:
    cp: ControlPlane
    model: Any = None  # a pydantic-ai model; None: built from config on first use
    client: httpx.AsyncClient | None = None
    _agent: Any = None  # the pydantic-ai Agent, built once (tools and their schemas)

    @property
    def config(self) -> AgentConfig:
        return self.cp.config.agent

    @property
    def llm(self) -> bool:
        return self.model is not None or self.config.model is not None

    def status(self) -> AgentStatus:
        return AgentStatus(llm=self.llm, provider=self.config.provider if self.llm else None,
                           model=self.config.model or (type(self.model).__name__
                                                       if self.model else None),
                           analyzers=list(router.ANALYZERS),
                           examples=router.examples(self.cp),
                           actions=list(actions.ACTIONS))

    def _model(self):
        if self.model is None:
            from gpuwarden.agent.llm import model_from_config

            self.model = model_from_config(self.config)
        return self.model

    def _client(self) -> httpx.AsyncClient:
        return self.client or self.cp.http()

    # -- storage ------------------------------------------------------------------------------

    def _row(self, run_id: str) -> dict[str, Any]:
        row = self.cp.db.connect().execute("SELECT * FROM agent_runs WHERE id = ?",
                                           (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no agent run {run_id!r}")
        return dict(row)

    def _calls(self, run_id: str) -> list[ProposedCall]:
        rows = self.cp.db.connect().execute(
            "SELECT * FROM agent_calls WHERE run_id = ? ORDER BY rowid", (run_id,)).fetchall()
        return [_call(r) for r in rows]

    def get(self, run_id: str) -> RunView:
        return _view(self._row(run_id), self._calls(run_id))

    def list(self, limit: int = 50) -> list[RunView]:
        """The newest runs with their calls: two queries, whatever the limit."""
        conn = self.cp.db.connect()
        runs = conn.execute("SELECT * FROM agent_runs ORDER BY created_at DESC LIMIT ?",
                            (limit,)).fetchall()
        calls: dict[str, list[ProposedCall]] = {r["id"]: [] for r in runs}
        if runs:
            for c in conn.execute(
                    f"SELECT * FROM agent_calls WHERE run_id IN ({','.join('?' * len(runs))}) "
                    "ORDER BY rowid", list(calls)):
                calls[c["run_id"]].append(_call(c))
        return [_view(r, calls[r["id"]]) for r in runs]

    def fail_interrupted(self) -> int:
        """Mark failed the runs a stopped or crashed ``serve`` left ``running``: those not
        touched since this process loaded the agent (no process drives them any more; a run
        of this process is never one).  Called when the service starts.  Returns how many."""
        with self.cp.db.write() as conn:
            count = conn.execute(
                "UPDATE agent_runs SET status = 'failed', error = ?, updated_at = ? "
                "WHERE status = 'running' AND updated_at < ?",
                ("interrupted: the control plane stopped before the run ended; ask again",
                 time.time(), LOADED_AT)).rowcount
        if count:
            log.warning("marked %d agent run(s) left running by a previous serve as failed",
                        count)
        return count

    def _update(self, run_id: str, **values: Any) -> None:
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.cp.db.write() as conn:
            conn.execute(f"UPDATE agent_runs SET {sets} WHERE id = ?", (*values.values(), run_id))

    # -- asking ------------------------------------------------------------------------------

    async def ask(self, prompt: str, actor: str, emit: Emit = _ignore) -> RunView:
        run_id = uuid.uuid4().hex[:12]
        now = time.time()
        mode = "llm" if self.llm else "analyzers"
        with self.cp.db.write() as conn:
            conn.execute("INSERT INTO agent_runs(id, created_by, prompt, status, mode, "
                         "created_at, updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                         (run_id, actor, prompt, mode, now, now))
        await emit({"type": "run", "id": run_id, "mode": mode})
        if mode == "analyzers":
            try:
                answer = await router.answer(self.cp, prompt)
            except Exception as exc:  # an analyzer's bug ends the run failed, never running
                log.exception("agent run %s: the analyzer failed", run_id)
                self._update(run_id, status="failed",
                             error=f"the analyzer failed: {type(exc).__name__}: {_short(exc)}")
            else:
                await emit({"type": "text", "delta": answer})
                self._update(run_id, status="done", answer=answer)
        else:
            await self._drive(run_id, actor, emit, prompt=prompt)
        view = self.get(run_id)
        await emit({"type": "end", "run": view.model_dump(mode="json")})
        return view

    async def decide(self, run_id: str, decisions: list[Decision], who: str,
                     emit: Emit = _ignore) -> RunView:
        run = self.get(run_id)
        if run.status != "awaiting_approval":
            raise ConflictError(f"run {run_id} is {run.status}: it awaits no decision")
        calls = {c.call_id: c for c in run.calls if c.state == "proposed"}
        for d in decisions:
            call = calls.get(d.call_id)
            if call is None:
                raise NotFoundError(f"run {run_id} has no undecided call {d.call_id!r}; "
                                    f"undecided: {', '.join(calls) or 'none'}")
            if d.approve and d.digest != call.digest:
                raise ConflictError(
                    f"call {d.call_id}: the approval names digest {d.digest!r} but the "
                    f"proposed {call.tool}{json.dumps(call.args)} has digest {call.digest}; "
                    "approve what was proposed, or deny it")
        now = time.time()
        with self.cp.db.write() as conn:
            for d in decisions:
                conn.execute("UPDATE agent_calls SET state = ?, decided_by = ?, decided_at = ?, "
                             "result = ? WHERE run_id = ? AND call_id = ?",
                             ("approved" if d.approve else "denied", who, now,
                              d.comment or None, run_id, d.call_id))
        undecided = set(calls) - {d.call_id for d in decisions}
        if undecided:
            return self.get(run_id)  # the run resumes when the batch is decided
        await emit({"type": "run", "id": run_id, "mode": "llm"})
        self._update(run_id, status="running")
        await self._drive(run_id, who, emit, batch=set(calls))
        view = self.get(run_id)
        await emit({"type": "end", "run": view.model_dump(mode="json")})
        return view

    # -- the model loop -----------------------------------------------------------------------

    def _limits(self) -> UsageLimits:
        c = self.config
        return UsageLimits(request_limit=c.request_limit, tool_calls_limit=c.tool_calls_limit,
                           total_tokens_limit=c.total_tokens_limit)

    def _cost(self, input_tokens: int, output_tokens: int) -> float | None:
        c = self.config
        if c.input_price_per_mtok is None or c.output_price_per_mtok is None:
            return None
        return round((input_tokens * c.input_price_per_mtok
                      + output_tokens * c.output_price_per_mtok) / 1e6, 6)

    def _resume_results(self, run_id: str, batch: set[str]
                        ) -> tuple[DeferredToolResults, dict[str, str]]:
        approvals: dict[str, Any] = {}
        approved: dict[str, str] = {}
        for c in self._calls(run_id):
            if c.call_id not in batch:
                continue
            if c.state == "approved":
                approvals[c.call_id] = True
                approved[c.call_id] = c.digest
            elif c.state == "denied":
                approvals[c.call_id] = ToolDenied(f"denied by {c.decided_by}"
                                                  + (f": {c.result}" if c.result else ""))
        return DeferredToolResults(approvals=approvals), approved

    async def _drive(self, run_id: str, actor: str, emit: Emit, prompt: str | None = None,
                     batch: set[str] | None = None) -> None:
        row = self._row(run_id)
        stored = json.loads(row["messages"]) if row["messages"] != "[]" else {}
        fence = Fence(stored["nonce"]) if stored else Fence()
        history = (ModelMessagesTypeAdapter.validate_python(stored["messages"])
                   if stored else None)
        deferred, approved = (self._resume_results(run_id, batch or set())
                              if prompt is None else (None, {}))
        pending_ids = set(deferred.approvals) if deferred else set()
        deps = AgentDeps(self.cp, self._client(), actor, fence, approved)
        user_text = row["prompt"]
        usage = {"requests": row["requests"], "input_tokens": row["input_tokens"],
                 "output_tokens": row["output_tokens"]}
        if self._agent is None:
            self._agent = build_agent(self._model())
        agent = self._agent
        handle: Any = None

        def absorb(u: Any) -> None:
            usage["requests"] += u.requests
            usage["input_tokens"] += u.input_tokens
            usage["output_tokens"] += u.output_tokens

        def failed(error: str) -> None:
            nonlocal history
            if handle is not None:  # what the interrupted run used and said still counts
                with contextlib.suppress(Exception):
                    absorb(handle.usage)
                with contextlib.suppress(Exception):
                    history = handle.all_messages()
            self._save(run_id, fence, history, usage, status="failed", error=error)

        try:
            for _ in range(MAX_REFUSALS + 1):
                result = None
                async with agent.run_stream_events(
                        prompt, message_history=history, deferred_tool_results=deferred,
                        deps=deps, usage_limits=self._limits(),
                        timeout=self.config.timeout) as events:
                    handle = events
                    async for event in events:
                        if isinstance(event, AgentRunResultEvent):
                            result = event.result
                        else:
                            await self._forward(event, emit)
                assert result is not None
                handle = None
                absorb(result.usage)
                history, prompt = result.all_messages(), None
                self._record_outcomes(run_id, deps, pending_ids)
                output = result.output
                if not isinstance(output, DeferredToolRequests):
                    self._save(run_id, fence, history, usage, status="done", answer=str(output))
                    return
                refused, proposed = self._screen(output, user_text)
                if proposed and not refused:
                    self._propose(run_id, proposed)
                    self._save(run_id, fence, history, usage, status="awaiting_approval")
                    await emit({"type": "approval_required",
                                "calls": [c.model_dump(mode="json")
                                          for c in self._calls(run_id)
                                          if c.state == "proposed"]})
                    return
                # refuse what the user did not ask for (and anything proposed alongside it)
                for call in proposed:
                    refused[call.tool_call_id] = ToolDenied(
                        "not executed: proposed together with an action the user did not ask "
                        "for; propose only what the user asked")
                self._refused(run_id, output, refused)
                deferred = DeferredToolResults(approvals=refused)
                pending_ids = set()
                await emit({"type": "refused", "calls": [
                    {"tool": c.tool_name, "args": c.args_as_dict()} for c in output.approvals]})
            failed("the model kept proposing actions the user did not ask for")
        except UsageLimitExceeded as exc:
            failed(f"usage limit reached: {exc} (agent.request_limit, agent.tool_calls_limit, "
                   "agent.total_tokens_limit)")
        except (ModelAPIError, UnexpectedModelBehavior, AgentRunError, httpx.HTTPError,
                GpuwardenError, TimeoutError) as exc:
            log.warning("agent run %s failed: %s", run_id, type(exc).__name__)
            failed(f"the model failed: {type(exc).__name__}: {_short(exc)}")
        except Exception as exc:  # a tool's bug: the run ends failed with it, never running
            log.exception("agent run %s: a tool failed", run_id)
            failed(f"a tool failed: {type(exc).__name__}: {_short(exc)}")

    def _screen(self, requests: DeferredToolRequests, user_text: str
                ) -> tuple[dict[str, Any], list[Any]]:
        refused: dict[str, Any] = {}
        proposed = []
        node_names = frozenset(n.name for n in self.cp.inventory.nodes())
        for call in requests.approvals:
            if call.tool_name not in actions.ACTIONS:
                refused[call.tool_call_id] = ToolDenied(f"{call.tool_name} is not an action")
            elif not actions.user_asked(call.tool_name, user_text, call.args_as_dict(),
                                        node_names):
                refused[call.tool_call_id] = ToolDenied(
                    f"refused: the user did not ask for {call.tool_name} with these "
                    "arguments. Never propose an action the user did not request; answer the "
                    "question instead.")
            else:
                try:
                    actions.canonical(call.tool_name, call.args_as_dict())
                    proposed.append(call)
                except ValueError as exc:
                    refused[call.tool_call_id] = ToolDenied(f"invalid arguments: {exc}")
        for call in requests.calls:  # external calls: gpuwarden defines none
            refused[call.tool_call_id] = ToolDenied("not available")
        return refused, proposed

    def _propose(self, run_id: str, calls: list[Any]) -> None:
        with self.cp.db.write() as conn:
            for call in calls:
                args = actions.canonical(call.tool_name, call.args_as_dict())
                conn.execute("INSERT OR REPLACE INTO agent_calls(run_id, call_id, tool, args, "
                             "digest, state) VALUES (?, ?, ?, ?, ?, 'proposed')",
                             (run_id, call.tool_call_id, call.tool_name,
                              json.dumps(args.model_dump(mode="json")),
                              actions.digest(call.tool_name, args)))

    def _refused(self, run_id: str, requests: DeferredToolRequests, refused: dict[str, Any]
                 ) -> None:
        with self.cp.db.write() as conn:
            for call in requests.approvals:
                if call.tool_call_id in refused and call.tool_name in actions.ACTIONS:
                    conn.execute(
                        "INSERT OR REPLACE INTO agent_calls(run_id, call_id, tool, args, "
                        "digest, state, decided_by, result) VALUES (?, ?, ?, ?, '', "
                        "'rejected', 'gpuwarden', ?)",
                        (run_id, call.tool_call_id, call.tool_name,
                         json.dumps(call.args_as_dict()), refused[call.tool_call_id].message))

    def _record_outcomes(self, run_id: str, deps: AgentDeps, pending: set[str]) -> None:
        if not pending:
            return
        with self.cp.db.write() as conn:
            for call_id in pending:
                state, text = deps.outcomes.get(call_id, (None, None))
                if state is None:
                    continue  # denied: stays denied
                conn.execute("UPDATE agent_calls SET state = ?, result = ? WHERE run_id = ? "
                             "AND call_id = ?", (state, text, run_id, call_id))
                deps.outcomes.pop(call_id, None)

    def _save(self, run_id: str, fence: Fence, history: Any, usage: dict[str, int],
              **values: Any) -> None:
        messages = json.dumps({"nonce": fence.nonce, "messages": json.loads(
            ModelMessagesTypeAdapter.dump_json(history or []))})
        self._update(run_id, messages=messages,
                     cost=self._cost(usage["input_tokens"], usage["output_tokens"]),
                     **usage, **values)

    async def _forward(self, event: Any, emit: Emit) -> None:
        if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
            if event.part.content:
                await emit({"type": "text", "delta": event.part.content})
        elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
            await emit({"type": "text", "delta": event.delta.content_delta})
        elif isinstance(event, FunctionToolCallEvent):
            if event.part.tool_name not in actions.ACTIONS:
                await emit({"type": "tool_call", "tool": event.part.tool_name,
                            "args": event.part.args_as_dict()})
        elif isinstance(event, FunctionToolResultEvent):
            content = str(getattr(event.part, "content", ""))
            await emit({"type": "tool_result", "tool": event.part.tool_name,
                        "chars": len(content)})


_SECRET = re.compile(r"\b(sk|pk|key|gw)[-_][A-Za-z0-9*_-]{6,}", re.I)


def _call(r: Any) -> ProposedCall:
    args = json.loads(r["args"])
    try:
        description = actions.ACTIONS[r["tool"]].describe(actions.canonical(r["tool"], args))
    except ValueError as exc:
        description = f"(invalid: {exc})"
    return ProposedCall(call_id=r["call_id"], tool=r["tool"], args=args, digest=r["digest"],
                        description=description, state=r["state"],
                        decided_by=r["decided_by"], decided_at=r["decided_at"],
                        result=r["result"])


def _view(r: Any, calls: list[ProposedCall]) -> RunView:
    return RunView(id=r["id"], status=r["status"], mode=r["mode"], prompt=r["prompt"],
                   created_by=r["created_by"], created_at=r["created_at"],
                   updated_at=r["updated_at"], answer=r["answer"], error=r["error"],
                   calls=calls, usage=Usage(requests=r["requests"],
                                            input_tokens=r["input_tokens"],
                                            output_tokens=r["output_tokens"], cost=r["cost"]))


def _short(exc: Exception) -> str:
    """The first line of an error, with anything shaped like a key masked (providers echo
    a masked key back in 401s; it still does not belong in the UI)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return _SECRET.sub("***", text)[:300]


async def stream(fn: Callable[[Emit], Awaitable[RunView]]) -> AsyncIterator[dict[str, Any]]:
    """Run ``fn`` with an emitter and yield its events as they come (for SSE and NDJSON)."""
    import asyncio

    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def emit(event: dict[str, Any]) -> None:
        await queue.put(event)

    async def runner() -> None:
        try:
            await fn(emit)
        except GpuwardenError as exc:
            await queue.put({"type": "error", "detail": str(exc)})
        except Exception as exc:  # the client hears what failed, not a cut stream
            log.exception("agent stream failed")
            await queue.put({"type": "error",
                             "detail": f"internal error: {type(exc).__name__}: {_short(exc)}"})
        finally:
            await queue.put(None)

    task = asyncio.create_task(runner())
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        await task
