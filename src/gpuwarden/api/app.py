"""``create_app``: the control plane's FastAPI application.  Handlers call ``services``
only; they never reach storage or subprocesses themselves."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpuwarden import __version__
from gpuwarden.api.auth import control_plane, require
from gpuwarden.api.problems import PROBLEM_JSON, PROBLEMS, problem, problems
from gpuwarden.api.security import SecurityHeaders, page_policy
from gpuwarden.api.web import build_web_router
from gpuwarden.diskspace import disk_full, is_disk_full
from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.metrics.model import SelectorError, parse_selector
from gpuwarden.nodeclient import NodeError
from gpuwarden.services import (
    alerts,
    checks,
    efficiency,
    history,
    jobreport,
    live,
    reclaim,
    slurm,
)
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import (
    ActionResult,
    ActionView,
    AlertDetail,
    AlertView,
    AuditEntry,
    CheckRequest,
    ChecksRequest,
    EfficiencyReport,
    GpuDetail,
    GpuHistory,
    GpuView,
    JobReport,
    NewSilence,
    NodeChecks,
    NodeDetail,
    NodeView,
    Overview,
    QueryResult,
    RuleView,
    SeriesList,
    SilenceView,
    SlurmJobDetail,
    SlurmJobView,
    SlurmNodeView,
    SlurmPartitionView,
    SlurmSummary,
    Status,
    TokenCreated,
    TokenView,
    positive_duration,
)
from gpuwarden.state.tokens import Principal

log = logging.getLogger(__name__)
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
CP = Annotated[ControlPlane, Depends(control_plane)]
Id = Annotated[int, Path(ge=1, le=2**62)]
JobId = Annotated[int, Path(ge=1, le=2**32)]
GpuIndex = Annotated[int, Path(ge=0, le=1023)]
Time = Annotated[float | None, Query(ge=0, le=4_102_444_800, description="unix seconds")]
Step = Annotated[float | None, Query(gt=0, le=31_536_000, description="seconds")]
Range = Literal["1h", "6h", "24h", "7d"]
Agg = Literal["avg", "min", "max", "sum", "last", "count"]
GpuStateQ = Literal["busy", "idle", "allocated_idle", "down"]


def _selector_pattern() -> str:
    """``metrics.model.parse_selector``'s grammar as a pattern, so the document says which
    selectors parse.  A regex matcher's value (``=~``, ``!~``) is held to a subset of regular
    expressions that always compiles (the pattern cannot tell a regex that compiles from one
    that does not): literals, ``.``, escapes such as ``\\\\.``, classes of single characters
    and the ranges ``0-9``, ``a-z``, ``A-Z`` (``[01]``, ``[^a-z_]``), groups one level deep
    with alternatives inside, ``|``, and one quantifier per atom (``*``, ``+``, ``?``,
    ``{n}``, ``{n,}``, each optionally lazy)."""
    name, label = r"[a-zA-Z_:][a-zA-Z0-9_:]*", r"[a-zA-Z_][a-zA-Z0-9_]*"
    string = r'"(?:[^"\\]|\\[^\n])*"'
    literal = r'[^"\\()\[\]{}*+?|^$]'
    escape = r'\\\\[.*+?()\[\]{}|^$]'
    klass = r'\[\^?(?:0-9|a-z|A-Z|[A-Za-z0-9_:., /])+\]'
    quant = r'(?:(?:[*+?]|\{[0-9]{1,3},?\})\??)?'  # at most one, optionally lazy
    inner = rf'(?:(?:{literal}|{escape}|{klass}){quant})*'
    group = rf'\({inner}(?:\|{inner})*\)'
    branch = rf'\^?(?:(?:{literal}|{escape}|{klass}|{group}){quant})*\$?'
    matcher = rf'{label}\s*(?:(?:=|!=)\s*{string}|(?:=~|!~)\s*"{branch}(?:\|{branch})*")'
    return (rf"^\s*{name}\s*(?:\{{\s*(?:{matcher}\s*(?:,\s*{matcher}\s*)*,?\s*)?\}})?"
            r"\s*$")


SELECTOR = _selector_pattern()
DURATION_HINT = "not a duration longer than 0; write e.g. 30m, 2h, 1d"
PATTERN_HINTS = {"since": DURATION_HINT + ", 2w", "duration": DURATION_HINT}
Selector = StringConstraints(min_length=1, max_length=2000, pattern=SELECTOR)


class Me(BaseModel):
    name: str
    role: str


class DrainRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=200,
                        description="why the node is drained (shown by sinfo -R)")


class NewToken(BaseModel):
    role: Literal["viewer", "operator", "admin"]
    name: str = ""


def build_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=PROBLEMS)

    @r.get("/me", response_model=Me, tags=["auth"])
    def me(who: Viewer) -> Me:
        return Me(name=who.name, role=who.role)

    @r.get("/status", response_model=Status, tags=["cluster"])
    def get_status(cp: CP, who: Viewer) -> Status:
        return live.status(cp)

    @r.get("/overview", response_model=Overview, tags=["cluster"])
    def get_overview(cp: CP, who: Viewer) -> Overview:
        return live.overview(cp)

    @r.get("/nodes", response_model=list[NodeView], tags=["cluster"])
    def get_nodes(cp: CP, who: Viewer) -> list[NodeView]:
        return live.list_nodes(cp)

    @r.get("/nodes/{name}", response_model=NodeDetail, tags=["cluster"],
           responses=problems(404))
    def get_node(name: str, cp: CP, who: Viewer) -> NodeDetail:
        return live.get_node(cp, name)

    @r.get("/nodes/{name}/checks", response_model=NodeChecks, tags=["cluster"],
           responses=problems(404))
    def get_node_checks(name: str, cp: CP, who: Viewer,
                        history: Annotated[int, Query(ge=1, le=500)] = 20) -> NodeChecks:
        return checks.node_checks(cp, name, history)

    @r.post("/nodes/{name}/checks", response_model=NodeChecks, tags=["cluster"],
            responses=problems(400, 404, 503))
    async def run_node_checks(name: str, body: CheckRequest, cp: CP,
                              who: Operator) -> NodeChecks:
        return (await checks.run(cp, [name], body.level, who=who.name))[0]

    @r.post("/checks", response_model=list[NodeChecks], tags=["cluster"],
            responses=problems(400, 404, 503))
    async def run_checks(body: ChecksRequest, cp: CP, who: Operator) -> list[NodeChecks]:
        """Check ``nodes`` together (every node when empty): each node's checks, and on two
        or more nodes the NCCL all-reduce across them."""
        return await checks.run(cp, body.nodes, body.level, who=who.name)

    @r.get("/gpus", response_model=list[GpuView], tags=["gpus"])
    def get_gpus(cp: CP, who: Viewer, node: str | None = None, state: GpuStateQ | None = None,
                 job: str | None = None, user: str | None = None) -> list[GpuView]:
        return live.list_gpus(cp, node=node, state=state, job=job, user=user)

    @r.get("/gpus/{node}/{index}", response_model=GpuDetail, tags=["gpus"],
           responses=problems(404))
    def get_gpu(node: str, index: GpuIndex, cp: CP,
                who: Viewer) -> GpuDetail:
        return live.get_gpu(cp, node, index)

    @r.get("/gpus/{node}/{index}/history", response_model=GpuHistory, tags=["gpus"],
           responses=problems(404))
    async def get_gpu_history(
        node: str, index: GpuIndex, cp: CP, who: Viewer,
        range: Range | None = "1h",
        start: Time = None, end: Time = None, step: Step = None, aggregation: Agg = "avg",
    ) -> GpuHistory:
        return await history.gpu_history(cp, node, index, range_=range, start=start, end=end,
                                         step=step, aggregation=aggregation)

    @r.get("/query", response_model=QueryResult, tags=["metrics"])
    async def get_query(
        cp: CP, who: Viewer,
        selector: Annotated[str, Selector,
                            Query(examples=['DCGM_FI_DEV_GPU_UTIL{node="node1"}'],
                                  description="METRIC or METRIC{label=\"value\",...}")],
        start: Time = None, end: Time = None, step: Step = None, aggregation: Agg = "avg",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> QueryResult:
        return await history.query(cp, selector, start=start, end=end, step=step,
                                   aggregation=aggregation, limit=limit)

    @r.get("/series", response_model=SeriesList, tags=["metrics"])
    async def get_series(
        cp: CP, who: Viewer,
        match: Annotated[list[Annotated[str, Selector]],
                         Query(alias="match[]", min_length=1, max_length=20,
                                          examples=[['DCGM_FI_DEV_GPU_UTIL{node="node1"}']],
                                          description="a series selector; repeat for more")],
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> SeriesList:
        return await history.series(cp, match, limit=limit)

    @r.get("/stream", tags=["cluster"],
           responses={200: {"content": {"text/event-stream": {}},
                            "description": "server-sent events: overview, gpus"}})
    async def stream(request: Request, cp: CP, who: Viewer) -> StreamingResponse:
        return StreamingResponse(_events(request, cp), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # -- Slurm ---------------------------------------------------------------------------

    @r.get("/slurm", response_model=SlurmSummary, tags=["slurm"],
           responses=problems(404, 503))
    def slurm_summary(cp: CP, who: Viewer) -> SlurmSummary:
        return slurm.summary(cp)

    @r.get("/slurm/jobs", response_model=list[SlurmJobView], tags=["slurm"],
           responses=problems(404, 503))
    def slurm_jobs(cp: CP, who: Viewer, state: str | None = None, user: str | None = None,
                   partition: str | None = None) -> list[SlurmJobView]:
        return slurm.jobs(cp, state=state, user=user, partition=partition)

    @r.get("/slurm/jobs/{job_id}", response_model=SlurmJobDetail, tags=["slurm"],
           responses=problems(404, 503))
    async def slurm_job(job_id: JobId, cp: CP,
                        who: Viewer) -> SlurmJobDetail:
        return await slurm.job(cp, job_id)

    @r.get("/slurm/jobs/{job_id}/report", response_model=JobReport, tags=["slurm"],
           responses=problems(404, 409, 503))
    async def slurm_job_report(
        job_id: JobId, cp: CP, who: Viewer,
        series: Annotated[bool, Query(description="each GPU's utilization and memory per "
                                      "step too (live reports)")] = False,
    ) -> JobReport:
        """The job's report, as ``jobstats JOBID``: Slurm's times, each GPU's utilization
        and memory over its life, GPU-hours, $ and $ wasted, grades and notes.  A job that
        ended has its stored summary (``source: stored``), also once Slurm and the metrics
        store have forgotten it; 409 for a job that has not started."""
        return await jobreport.job_report(cp, job_id, series=series)

    @r.get("/slurm/nodes", response_model=list[SlurmNodeView], tags=["slurm"],
           responses=problems(404, 503))
    def slurm_nodes(cp: CP, who: Viewer) -> list[SlurmNodeView]:
        return slurm.nodes(cp)

    @r.get("/slurm/partitions", response_model=list[SlurmPartitionView], tags=["slurm"],
           responses=problems(404, 503))
    def slurm_partitions(cp: CP, who: Viewer) -> list[SlurmPartitionView]:
        return slurm.partitions(cp)

    @r.post("/slurm/jobs/{job_id}/{action}", response_model=ActionResult, tags=["slurm"],
            responses=problems(404, 409, 502, 503))
    async def slurm_job_action(job_id: JobId,
                               action: Literal["cancel", "hold", "release"], cp: CP,
                               who: Operator) -> ActionResult:
        return await slurm.job_action(cp, cp.http(), who.name, job_id, action)

    @r.post("/slurm/nodes/{name}/drain", response_model=ActionResult, tags=["slurm"],
            responses=problems(400, 404, 409, 502, 503))
    async def slurm_drain(name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                                   max_length=128)],
                          body: DrainRequest, cp: CP, who: Operator) -> ActionResult:
        return await slurm.node_action(cp, cp.http(), who.name, name, "drain", body.reason)

    @r.post("/slurm/nodes/{name}/resume", response_model=ActionResult, tags=["slurm"],
            responses=problems(404, 409, 502, 503))
    async def slurm_resume(name: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                                                    max_length=128)],
                           cp: CP, who: Operator) -> ActionResult:
        return await slurm.node_action(cp, cp.http(), who.name, name, "resume")

    # -- watchdog --------------------------------------------------------------------------

    @r.get("/alerts", response_model=list[AlertView], tags=["alerts"])
    def get_alerts(cp: CP, who: Viewer,
                   state: Literal["pending", "firing", "resolved", "all"] | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AlertView]:
        return alerts.list_alerts(cp, state, limit)

    @r.get("/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"],
           responses=problems(404))
    def get_alert(alert_id: Id, cp: CP, who: Viewer) -> AlertDetail:
        return alerts.get_alert(cp, alert_id)

    @r.post("/alerts/{alert_id}/acknowledge", response_model=AlertView, tags=["alerts"],
            responses=problems(404, 503))
    def ack_alert(alert_id: Id, cp: CP, who: Operator) -> AlertView:
        return alerts.acknowledge(cp, alert_id, who.name)

    @r.get("/rules", response_model=list[RuleView], tags=["alerts"])
    def get_rules(cp: CP, who: Viewer) -> list[RuleView]:
        return alerts.rules(cp)

    @r.get("/silences", response_model=list[SilenceView], tags=["alerts"])
    def get_silences(cp: CP, who: Viewer, expired: bool = False) -> list[SilenceView]:
        return alerts.list_silences(cp, expired)

    @r.post("/silences", response_model=SilenceView, status_code=201, tags=["alerts"],
            responses=problems(400, 404, 503))
    def post_silence(body: NewSilence, cp: CP, who: Operator) -> SilenceView:
        return alerts.add_silence(cp, body, who.name)

    @r.delete("/silences/{silence_id}", status_code=204, tags=["alerts"],
              responses=problems(404, 503))
    def delete_silence(silence_id: Id, cp: CP, who: Operator) -> None:
        alerts.expire_silence(cp, silence_id, who.name)

    @r.get("/actions", response_model=list[ActionView], tags=["alerts"])
    def get_actions(cp: CP, who: Viewer, state: str | None = None) -> list[ActionView]:
        return alerts.list_actions(cp, state)

    @r.post("/actions/{action_id}/{decision}", response_model=ActionView, tags=["alerts"],
            responses=problems(404, 409, 503))
    def decide(action_id: Id, decision: Literal["approve", "deny"], cp: CP,
               who: Operator) -> ActionView:
        return alerts.decide_action(cp, action_id, who.name, decision == "approve")

    # -- reclaim ---------------------------------------------------------------------------
    @r.get("/reclaim", response_model=reclaim.ReclaimPlan, tags=["reclaim"])
    def get_reclaim(cp: CP, who: Viewer) -> reclaim.ReclaimPlan:
        """Every running GPU job reclaim watches: its stage, the next step and when, and
        the $ reclaim saved today and this month."""
        return reclaim.plan(cp)

    @r.get("/reclaim/history", response_model=list[reclaim.ReclaimEvent], tags=["reclaim"],
           responses=problems(409))
    def get_reclaim_history(cp: CP, who: Viewer,
                            key: Annotated[str | None, Query(pattern=r"^\d+(_\d+)?$")] = None,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 200
                            ) -> list[reclaim.ReclaimEvent]:
        return reclaim.history(cp, key=key, limit=limit)

    @r.post("/reclaim/{switch}", response_model=reclaim.ReclaimPlan, tags=["reclaim"],
            responses=problems(409, 503))
    def reclaim_switch(switch: Literal["pause", "resume"], cp: CP,
                       who: Operator) -> reclaim.ReclaimPlan:
        """The kill switch: ``pause`` stops every warning and action until ``resume``."""
        if switch == "pause":
            return reclaim.pause(cp, who.name, "paused through the API")
        return reclaim.resume(cp, who.name)

    @r.post("/reclaim/jobs/{key}/{what}", response_model=reclaim.ReclaimEvent,
            tags=["reclaim"], responses=problems(404, 409, 502, 503))
    async def reclaim_job(key: Annotated[str, Path(pattern=r"^\d+(_\d+)?$", max_length=32)],
                          what: Literal["exempt", "act"], cp: CP,
                          who: Operator) -> reclaim.ReclaimEvent:
        """``exempt``: keep the job whatever it does; ``act``: the policy's action now."""
        if what == "exempt":
            reclaim.exempt(cp, who.name, key)
            return reclaim.history(cp, key=key, limit=1)[0]
        return await reclaim.act_now(cp, who.name, key)

    # -- reports ---------------------------------------------------------------------------

    @r.get("/reports/efficiency", response_model=EfficiencyReport, tags=["reports"],
           responses={200: {"content": {"text/csv": {}},
                            "description": "JSON, or CSV with format=csv or Accept: text/csv"}})
    def get_efficiency(
        request: Request, cp: CP, who: Viewer,
        since: Annotated[str, Query(max_length=16, examples=["7d"],
                                    pattern=positive_duration("ms", "s", "m", "h", "d", "w"),
                                    description="how far back: 24h, 7d, 2w")] = "7d",
        by: Literal["user", "account", "partition"] = "user",
        format: Literal["json", "csv"] | None = None,
    ) -> Any:
        """GPU-hours, mean utilization, $ and $ wasted of the GPU jobs that ended in the
        window, per user, account or partition, ranked by GPU-hours (stored summaries)."""
        report = efficiency.efficiency(cp, since=since, by=by)
        if format == "csv" or (format is None
                               and "text/csv" in request.headers.get("accept", "")):
            return Response(efficiency.efficiency_csv(report), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename='
                                     f'"gpuwarden-efficiency-by-{by}.csv"'})
        return report

    @r.get("/audit", response_model=list[AuditEntry], tags=["auth"])
    def get_audit(cp: CP, who: Admin,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditEntry]:
        return alerts.audit_log(cp, limit)

    @r.get("/tokens", response_model=list[TokenView], tags=["auth"])
    def list_tokens(cp: CP, who: Admin) -> list[TokenView]:
        return [TokenView(**dataclasses.asdict(t)) for t in cp.tokens.list()]

    @r.post("/tokens", response_model=TokenCreated, status_code=201, tags=["auth"],
            responses=problems(400, 503))
    def create_token(body: NewToken, cp: CP, who: Admin) -> TokenCreated:
        token = cp.tokens.create(body.role, body.name)
        created = cp.tokens.find(token)
        return TokenCreated(id=created.token_id if created else None, role=body.role,
                            token=token)

    @r.delete("/tokens/{token_id}", status_code=204, tags=["auth"],
              responses=problems(404, 409, 503))
    def revoke_token(token_id: Id, cp: CP, who: Admin) -> None:
        if token_id == who.token_id:  # an admin locking themselves out by a slip
            raise HTTPException(409, f"token {token_id} is the one this request is made "
                                     "with; revoke it with another admin token, or with "
                                     f"`gpuwarden token revoke {token_id}` on the server")
        if not cp.tokens.revoke(token_id):
            raise HTTPException(404, f"no active token with id {token_id}")

    return r


async def _events(request: Request, cp: ControlPlane) -> AsyncIterator[bytes]:
    """Overview and GPU list whenever a scrape lands (at most once a second), a comment
    every 15 s to keep proxies from closing the stream."""
    seen = -1
    last_beat = asyncio.get_running_loop().time()
    while not cp.closing.is_set() and not await request.is_disconnected():
        scraper = cp.scraper
        version = scraper.version if scraper else 0
        now = asyncio.get_running_loop().time()
        if version != seen:
            seen = version
            overview = live.overview(cp).model_dump_json()
            gpus = json.dumps([g.model_dump() for g in live.list_gpus(cp)])
            yield f"event: overview\ndata: {overview}\n\nevent: gpus\ndata: {gpus}\n\n".encode()
            last_beat = now
        elif now - last_beat > 15:
            yield b": keep-alive\n\n"
            last_beat = now
        await asyncio.sleep(1.0)
        if scraper is not None:
            scraper.changed.clear()
            for _ in range(14):  # a second at a time, so a stopping server is seen at once
                if cp.closing.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(scraper.changed.wait(), timeout=1)
                    break


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The document FastAPI builds, with every 4xx/5xx answered as what it is on the wire:
    ``application/problem+json`` (RFC 9457), not ``application/json``; and on every
    operation the ``text/plain`` 400 the HTTP server answers a request it cannot read."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        for operation in (op for item in doc["paths"].values() for op in item.values()):
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code[0] in "45" and "application/json" in content:
                    response["content"] = {PROBLEM_JSON: content.pop("application/json")}
            # what the HTTP server itself answers, before any route runs, to a request it
            # cannot read (malformed, or a request line or headers over uvicorn's 16 KiB)
            unreadable = operation["responses"].setdefault("400", {
                "description": "Bad Request"})
            unreadable.setdefault("content", {})["text/plain"] = {
                "schema": {"type": "string", "example": "Invalid HTTP request received."}}
        app.openapi_schema = doc
    return app.openapi_schema


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for this path, matched as OpenAPI says: a
    concrete path before a templated one (``/reclaim/history`` before ``/reclaim/{switch}``,
    ``/slurm/jobs/{job_id}/report`` before ``/slurm/jobs/{job_id}/{action}``)."""
    import re

    paths = getattr(request.app.state, "openapi_paths", None)
    if paths is None:  # (parameter count, pattern, methods), most concrete first
        paths = sorted(((template.count("{"),
                         re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"),
                         sorted(m.upper() for m in item))
                        for template, item in request.app.openapi()["paths"].items()),
                       key=lambda entry: entry[0])
        request.app.state.openapi_paths = paths
    matching = [(params, methods) for params, pattern, methods in paths
                if pattern.match(request.url.path)]
    return [m for params, methods in matching if params == matching[0][0] for m in methods]


def _field(loc: tuple[Any, ...]) -> str:
    """``selector``, ``match[]`` (not ``match[].0``), ``body.decisions.0.approve``."""
    if loc[0] == "query" and len(loc) > 1:
        return str(loc[1])
    return ".".join(str(p) for p in loc[1:]) or str(loc[0])


def _message(error: dict[str, Any]) -> str:
    """pydantic's message, but what to write instead of a long pattern where there is one."""
    if error["type"] != "string_pattern_mismatch":
        return error["msg"]
    if error["ctx"].get("pattern") == SELECTOR:
        try:
            parse_selector(error["input"])
        except SelectorError as exc:
            return str(exc)
        return ("a regex matcher's value (=~, !~) is written here without groups, classes, "
                "escapes or {n}; alternatives (|), ., *, + and ? are fine")
    return PATTERN_HINTS.get(str(error["loc"][-1]), error["msg"])


def _method_not_allowed(request: Request, allowed: list[str]) -> JSONResponse:
    allow = ", ".join(allowed)
    return problem(405, f"{request.url.path} takes {allow}, not {request.method}",
                    headers={"Allow": allow})


DOCS = "/api/v1/docs"


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /api/v1/docs with its assets served from the installed
    ``swagger-ui-bundle-v2`` package, so the page works with no internet access."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(f"{DOCS}/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS, include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "", title="gpuwarden API",
            swagger_js_url=f"{DOCS}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS}/assets/swagger-ui.css",
            swagger_favicon_url=f"{DOCS}/assets/favicon-32x32.png")
        page.headers["Content-Security-Policy"] = page_policy(page.body.decode())
        return page


def create_app(cp: ControlPlane, *, run_scraper: bool = True, agent_model: Any = None
               ) -> FastAPI:
    """``agent_model``: a pydantic-ai model for the ops agent (tests); by default the agent
    builds its model from ``cp.config.agent``."""
    from gpuwarden.api.agent import build_agent_router

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        stop = asyncio.Event()
        if run_scraper and cp.scraper is not None:
            tasks.append(asyncio.create_task(cp.scraper.run(), name="scraper"))
        if run_scraper and cp.watchdog is not None:
            tasks.append(asyncio.create_task(cp.watchdog.run(stop), name="watchdog"))
        if run_scraper and cp.reclaim is not None:
            tasks.append(asyncio.create_task(cp.reclaim.run(stop), name="reclaim"))
        if run_scraper and cp.reports is not None:
            tasks.append(asyncio.create_task(cp.reports.run(stop), name="job-reports"))
        if run_scraper and cp.periodic_checks is not None:
            tasks.append(asyncio.create_task(cp.periodic_checks.run(stop),
                                             name="periodic-checks"))
        try:
            yield
        finally:
            stop.set()
            if cp.scraper is not None:
                cp.scraper.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            if cp.client is not None:
                await cp.client.aclose()

    app = FastAPI(
        title="gpuwarden",
        version=__version__,
        description="The gpuwarden control plane: cluster overview, nodes, GPUs, metrics.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served below from the package's own Swagger UI, not a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.state.cp = cp
    app.state.agent, app.state.agent_model = None, agent_model
    # outside Starlette's ServerErrorMiddleware too, so a bug's 500 carries the headers
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeaders(build_stack())  # type: ignore[method-assign]
    if cp is not None and cp.config.trusted_proxies:  # their X-Forwarded-Proto/-For only
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=cp.config.trusted_proxies)
    app.include_router(build_router())
    app.include_router(build_agent_router())

    _mount_docs(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    app.include_router(build_web_router())  # last: its catch-all serves the UI

    @app.exception_handler(StarletteHTTPException)
    async def httpproblem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        spa = getattr(request.scope.get("route"), "path", None) == "/{path:path}"
        if exc.status_code == 405 or (exc.status_code == 404 and spa):
            allowed = _allowed_methods(request)  # every route's, not the first one's
            if allowed and request.method not in allowed:
                return _method_not_allowed(request, allowed)
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if all(e["loc"][0] == "path" for e in exc.errors()):
            allowed = _allowed_methods(request)
            if allowed and request.method not in allowed:
                return _method_not_allowed(request, allowed)
        errors = [{"field": _field(e["loc"]), "in": str(e["loc"][0]), "message": _message(e)}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, detail, errors=errors)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(slurm.SlurmUnavailable)
    async def no_slurm(request: Request, exc: slurm.SlurmUnavailable) -> JSONResponse:
        return problem(503, str(exc))

    @app.exception_handler(NodeError)
    async def node_error(request: Request, exc: NodeError) -> JSONResponse:
        # the node's own 4xx (bad job id, unknown node) is the caller's; the rest is a gateway
        status = exc.status if 400 <= exc.status < 500 and exc.status != 401 else 502
        return problem(status, f"the controller node says: {exc}")

    @app.exception_handler(reclaim.ReclaimOff)
    async def reclaim_off(request: Request, exc: reclaim.ReclaimOff) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(GpuwardenError)
    async def user_error(request: Request, exc: GpuwardenError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(SelectorError)
    async def bad_selector(request: Request, exc: SelectorError) -> JSONResponse:
        field = "match[]" if request.url.path.endswith("/series") else "selector"
        return problem(422, str(exc), errors=[{"field": field, "in": "query",
                                                "message": str(exc)}])

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(sqlite3.DatabaseError)
    async def cannot_write(request: Request, exc: sqlite3.DatabaseError) -> JSONResponse:
        if is_disk_full(exc):  # reads keep working; this change waits for space
            return problem(503, f"the state database cannot write: {disk_full(cp.db.path)}; "
                                 f"free some space under {cp.db.path.parent}",
                            headers={"Retry-After": "60"})
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return await internal(request, exc)

    @app.exception_handler(Exception)  # Starlette logs the traceback of these itself
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, f"internal error ({type(exc).__name__}); the server's log has "
                             "the details")

    return app
