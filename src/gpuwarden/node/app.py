"""The node daemon's HTTP app (Starlette: the node needs no more, and stays small).

Every route but ``/healthz`` demands ``Authorization: Bearer <token>``.  Handlers only read
the latest snapshot, so a scrape costs a render, never an NVML call.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuwarden import __version__
from gpuwarden.bearer import bearer_token
from gpuwarden.gpu.wire import encode_snapshot
from gpuwarden.node.exposition import CONTENT_TYPE, Exposition, GpuCollector
from gpuwarden.node.poller import NodeSnapshot


def problem(status: int, title: str, detail: str, **headers: str) -> JSONResponse:
    """An RFC 9457 problem document."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers or None,
    )


async def json_object(request: Request, example: str, *, not_json: int = 400,
                      not_object: int = 400) -> dict[str, Any] | Response:
    """The request's body as a JSON object, or the problem document that says what to send
    (``example``: a body that would do); ``not_json``/``not_object``: the status of each
    refusal (the routes keep the codes they always answered)."""
    try:
        body = await request.json()
    except ValueError:
        return problem(not_json, HTTP_TITLES[not_json], f"The body is not JSON; send {example}")
    if not isinstance(body, dict):
        return problem(not_object, HTTP_TITLES[not_object],
                       f"The body must be a JSON object; send {example}")
    return body


HTTP_TITLES = {400: "Bad Request", 422: "Unprocessable Content"}


def create_app(
    snapshot: Callable[[], NodeSnapshot | None],
    *,
    token: str | None,
    extra_collectors: Sequence[Collector] = (),
    extra_routes: Sequence[Route] = (),
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """``token=None`` disables auth (the CLI allows that on loopback only)."""
    exposition = Exposition([GpuCollector(snapshot, clock), *extra_collectors])
    expected = token.encode() if token is not None else None

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        given = bearer_token(request.headers.get("authorization", "")).encode()
        return bool(given) and hmac.compare_digest(given, expected)

    async def healthz(request: Request) -> Response:
        snap = snapshot()
        if snap is None:
            return JSONResponse({"status": "starting", "reason": "no GPU poll yet"}, 503)
        health = snap.health(clock())
        body = {"status": health.state, "reason": health.reason, "backend": snap.poll.backend,
                "gpus": len(snap.poll.gpus), "gpus_up": sum(g.up for g in snap.poll.gpus),
                "version": __version__}
        return JSONResponse(body, 200 if health.ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(exposition.render(), media_type=CONTENT_TYPE)

    async def api_checks(request: Request) -> Response:
        """Run the node health checks on the latest poll: ``GET ?level=quick&gpus=4&
        model=H100`` (the shipped checks) or ``POST {"level", "expect": {"gpus", "model"},
        "checks": {name: overrides}}`` (what the control plane sends)."""
        import asyncio

        from gpuwarden.checks import check_level, load_checks, run_checks
        from gpuwarden.errors import GpuwardenError

        snap = snapshot()
        if snap is None:
            return problem(503, "Service Unavailable", "The first GPU poll has not finished.")
        try:
            if request.method == "POST":
                body = await json_object(request, '{"level": "quick"}')
                if isinstance(body, Response):
                    return body
                expect_doc = body.get("expect") or {}
                level, overrides = body.get("level", "quick"), body.get("checks")
            else:
                expect_doc = {k: request.query_params[k] for k in ("gpus", "model")
                              if k in request.query_params}
                level, overrides = request.query_params.get("level", "quick"), None
            if not isinstance(level, str):
                return problem(400, "Bad Request", "level: use quick, standard or long.")
            expect = _expectation(expect_doc)
            checks = load_checks(overrides, source="checks")
            check_level(level, "level")
        except (GpuwardenError, ValueError) as exc:
            return problem(400, "Bad Request", str(exc))
        results = await asyncio.to_thread(run_checks, snap.poll, checks, level,
                                          expect=expect, jobs=snap.jobs)
        return JSONResponse({"node": snap.hostname, "level": level, "at": clock(),
                             "results": [r.to_json() for r in results]})

    def _expectation(doc: Any) -> Any:
        from gpuwarden.checks import Expectation

        if not isinstance(doc, dict):
            raise ValueError("expect: must be an object with gpus and model")
        gpus = doc.get("gpus")
        if gpus is not None:
            try:
                gpus = int(gpus)
            except (TypeError, ValueError):
                raise ValueError(f"expect.gpus: {gpus!r} is not a number of GPUs") from None
        model = doc.get("model")
        if model is not None and not isinstance(model, str):
            raise ValueError("expect.model: must be text (a GPU model such as H100)")
        since = doc.get("xids_since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            raise ValueError("expect.xids_since: must be a unix time (seconds)")
        return Expectation(gpus, model or None, None if since is None else float(since))

    async def api_snapshot(request: Request) -> Response:
        snap = snapshot()
        if snap is None:
            return problem(503, "Service Unavailable", "The first GPU poll has not finished.")
        return JSONResponse(encode_snapshot(snap, clock()))

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return problem(
                    401, "Unauthorized",
                    "Send the node token as 'Authorization: Bearer <token>'.",
                    **{"WWW-Authenticate": 'Bearer realm="gpuwarden-node"'},
                )
            return await handler(request)

        return endpoint

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", guarded(metrics)),
        Route("/api/v1/snapshot", guarded(api_snapshot)),
        Route("/api/v1/checks", guarded(api_checks), methods=["GET", "POST"]),
    ]
    for route in extra_routes:
        routes.append(Route(route.path, guarded(route.endpoint), methods=route.methods))
    return Starlette(routes=routes)
