"""The web UI: sign-in routes and the built single-page app from ``gpuwarden/web/dist``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from gpuwarden.api.auth import SESSION_COOKIE
from gpuwarden.api.problems import problems
from gpuwarden.api.security import foreign_page, page_policy
from gpuwarden.services.context import ControlPlane

DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
SESSION_MAX_AGE = 7 * 24 * 3600
NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>gpuwarden</title>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>The web UI is not built</h1>
<p>The API works (<a href="/api/v1/docs">/api/v1/docs</a>). To build the dashboard run
<code>make web</code> in the gpuwarden checkout (it runs <code>npm ci</code> and
<code>npm run build</code> in <code>web/</code>), then reload this page.</p></body>"""


class SessionRequest(BaseModel):
    token: str


def _set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")


def build_web_router(dist: Path = DIST) -> APIRouter:
    r = APIRouter()

    @r.get("/login", include_in_schema=False)
    def login(request: Request, token: str = "") -> Response:
        cp: ControlPlane = request.app.state.cp
        if not token or cp.tokens.authenticate(token) is None:
            return RedirectResponse("/signin?error=invalid_token", status_code=303)
        response = RedirectResponse("/", status_code=303)
        _set_session(response, request, token)
        return response

    @r.post("/api/v1/session", status_code=204, tags=["auth"],
            responses=problems(400, 401, 403, 422))
    def create_session(body: SessionRequest, request: Request) -> Response:
        """Sign in with an API token: sets the HttpOnly session cookie (refused from another
        site's page: 403)."""
        cp: ControlPlane = request.app.state.cp
        if (refusal := foreign_page(request)) is not None:
            raise HTTPException(403, refusal)
        if cp.tokens.authenticate(body.token.strip()) is None:
            raise HTTPException(401, "The token is unknown or revoked.")
        response = Response(status_code=204)
        _set_session(response, request, body.token.strip())
        return response

    @r.post("/api/v1/logout", status_code=204, tags=["auth"], responses=problems(403))
    def logout(request: Request) -> Response:
        """Sign out: clears the session cookie (refused from another site's page: 403)."""
        if (refusal := foreign_page(request)) is not None:
            raise HTTPException(403, refusal)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @r.get("/{path:path}", include_in_schema=False)
    def spa(path: str) -> Response:
        if path.startswith("api/"):
            raise HTTPException(404, f"no API route /{path}")
        index = dist / "index.html"
        if not index.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503)
        candidate = (dist / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(dist.resolve()):
            immutable = path.startswith("assets/")
            headers = {"Cache-Control": "public, max-age=31536000, immutable" if immutable
                       else "public, max-age=300"}
            return FileResponse(candidate, headers=headers)
        return FileResponse(index, headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": page_policy(index.read_text(errors="replace"))})

    return r
