"""API authentication: ``Authorization: Bearer <token>`` or the UI's session cookie (which
changes state only from this site's own pages).  Roles: a viewer reads, an operator acts, an
admin manages tokens and configuration."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer

from gpuwarden.api.security import cross_site_refusal
from gpuwarden.bearer import bearer_token
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.tokens import Principal, role_at_least

SESSION_COOKIE = "gpuwarden_session"
# declared in the OpenAPI document; ``principal`` reads the header and cookie itself
BEARER = HTTPBearer(auto_error=False, scheme_name="token",
                    description="an API token: `gpuwarden token create`")
COOKIE = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, scheme_name="session",
                      description="the web UI's session, set by POST /api/v1/session")


def control_plane(request: Request) -> ControlPlane:
    return request.app.state.cp


def principal(request: Request, _bearer: object = Security(BEARER),
              _cookie: object = Security(COOKIE)) -> Principal:
    cp: ControlPlane = request.app.state.cp
    token = bearer_token(request.headers.get("authorization", ""))
    if not token:
        token = request.cookies.get(SESSION_COOKIE, "")
        refusal = cross_site_refusal(request) if token else None
        if refusal is not None:  # a cookie rides along on any site's request; a token never
            raise HTTPException(403, refusal)
    if not token:
        raise HTTPException(401, "Send an API token as 'Authorization: Bearer <token>' "
                                 "(create one with `gpuwarden token create`).",
                            headers={"WWW-Authenticate": "Bearer"})
    who = cp.tokens.authenticate(token)
    if who is None:
        raise HTTPException(401, "The token is unknown or revoked.",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return who


def require(role: str) -> Callable[[Principal], Principal]:
    def check(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if not role_at_least(who.role, role):
            raise HTTPException(403, f"This needs the {role} role; your token is {who.role}.")
        return who

    return check
