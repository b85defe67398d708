"""What a browser needs to be told: the security headers on every response, the content
security policy of the pages, and the same-origin rule for cookie-authenticated changes
(a session cookie rides along on any site's form post; a bearer token never does)."""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# the UI's bundle sets element styles at run time and its scroll lock (Radix) adds a
# <style> element, hence 'unsafe-inline' for styles; scripts come only from this origin
# (plus the hashes of a page's own inline scripts)
_POLICY = ("default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)

HEADERS = {
    "Content-Security-Policy": _POLICY.format(hashes=""),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page_policy(html: str) -> str:
    """The content security policy for ``html``: the default one, with each of the page's
    inline scripts allowed by its SHA-256 hash (and nothing else inline)."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html))
    return _POLICY.format(hashes=hashes)


class SecurityHeaders:
    """Adds ``HEADERS`` to every response that does not set its own (a page with inline
    scripts sets its ``page_policy``).  Plain ASGI, so event streams pass through as sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def cross_site_refusal(request: Request) -> str | None:
    """Why a cookie-authenticated ``request`` must be refused, or None when it is safe or
    comes from this site's own pages: ``Origin`` (or, absent, ``Sec-Fetch-Site``) must say
    same-origin for any method that changes something."""
    if request.method in SAFE_METHODS:
        return None
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    fix = ("; a script or tool sends 'Authorization: Bearer <token>' instead of the session "
           "cookie")
    if origin is not None:
        if origin.strip().lower() == own:
            return None
        proxy = ("; behind a TLS proxy, list its address in trusted_proxies and have it pass "
                 "the Host header" if origin.lower().startswith("https:")
                 and own.startswith("http:") else "")
        return (f"a {request.method} signed in by the session cookie must come from this "
                f"site's own pages: Origin {origin!r} is not {own!r}{proxy}{fix}")
    site = request.headers.get("sec-fetch-site")
    if site == "same-origin":
        return None
    said = f"Sec-Fetch-Site is {site!r}" if site else "it sent neither Origin nor Sec-Fetch-Site"
    return (f"a {request.method} signed in by the session cookie must come from this site's "
            f"own pages, and {said}{fix}")



def foreign_page(request: Request) -> str | None:
    """Why a sign-in or sign-out (``POST /session``, ``/logout``: no session yet, so no
    cookie to check) must be refused: a browser says it comes from another site's page
    (``Origin`` not ours, or ``Sec-Fetch-Site`` cross-site or same-site).  A request with
    neither header is not a browser's cross-site one and passes: a browser always sends
    ``Origin`` on a cross-origin POST, which is what a login CSRF (a planted session of the
    attacker's token) would be."""
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    origin = request.headers.get("origin")
    if origin is not None and origin.strip().lower() != own:
        return (f"sign-in and sign-out come from this site's own pages: Origin {origin!r} "
                f"is not {own!r}")
    site = request.headers.get("sec-fetch-site")
    if origin is None and site in ("cross-site", "same-site"):
        return (f"sign-in and sign-out come from this site's own pages, and Sec-Fetch-Site "
                f"is {site!r}")
    return None
