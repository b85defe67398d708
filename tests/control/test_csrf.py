"""Cross-site requests and the browser-facing headers: a session cookie changes state only
from this site's own pages; a bearer token is unaffected; every response carries the
security headers; behind a trusted TLS proxy the cookie is Secure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gpuwarden.api.app import create_app
from gpuwarden.api.auth import SESSION_COOKIE
from gpuwarden.api.web import DIST
from gpuwarden.config import ServeConfig
from gpuwarden.metrics import open_store
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.db import StateDB

OWN = "http://testserver"  # TestClient's base URL
FOREIGN = "https://evil.example"

# the body-less state changes the issue names, plus drain (a JSON body) and a token
ROUTES = [
    ("POST", "/api/v1/actions/7/approve", None),
    ("POST", "/api/v1/actions/7/deny", None),
    ("POST", "/api/v1/slurm/jobs/7/cancel", None),
    ("POST", "/api/v1/slurm/jobs/7/hold", None),
    ("POST", "/api/v1/slurm/jobs/7/release", None),
    ("POST", "/api/v1/slurm/nodes/n1/drain", {"reason": "maintenance"}),
    ("POST", "/api/v1/slurm/nodes/n1/resume", None),
    ("POST", "/api/v1/alerts/7/acknowledge", None),
    ("DELETE", "/api/v1/silences/7", None),
    ("POST", "/api/v1/reclaim/pause", None),
    ("POST", "/api/v1/tokens", {"role": "viewer", "name": "planted"}),
]


def control_plane(tmp_path, **config) -> ControlPlane:
    cfg = ServeConfig(**config)
    return ControlPlane(config=cfg, db=StateDB(tmp_path / "state.db"),
                        store=open_store(cfg.store, tmp_path))


@pytest.fixture
def cp(tmp_path) -> Iterator[ControlPlane]:
    cp = control_plane(tmp_path)
    yield cp
    cp.store.close()


@pytest.fixture
def browser(cp) -> Iterator[TestClient]:
    """A client signed in the way the UI is: the session cookie, no Authorization header."""
    with TestClient(create_app(cp, run_scraper=False)) as client:
        signed_in = client.post("/api/v1/session", json={"token": cp.tokens.create("admin")})
        assert signed_in.status_code == 204 and client.cookies.get(SESSION_COOKIE)
        yield client


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_cookie_from_a_foreign_origin_changes_nothing(browser, cp, method, path, body):
    tokens_before = len(cp.tokens.list())
    refused = browser.request(method, path, json=body, headers={"Origin": FOREIGN})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["status"] == 403 and problem["title"] == "Forbidden"
    assert f"Origin '{FOREIGN}' is not '{OWN}'" in problem["detail"]
    assert "Authorization: Bearer" in problem["detail"]  # how a tool does it instead
    assert len(cp.tokens.list()) == tokens_before
    # the same request from the site's own page reaches the handler (which answers as it
    # would: 404 for an unknown id, 503 with no Slurm controller, 2xx where it acts)
    allowed = browser.request(method, path, json=body, headers={"Origin": OWN})
    assert allowed.status_code != 403, allowed.text
    assert allowed.status_code < 500 or allowed.status_code in (502, 503)
    if allowed.status_code >= 400:
        assert "Origin" not in allowed.json()["detail"]


def test_sec_fetch_site_decides_when_origin_is_absent(browser):
    path = "/api/v1/alerts/7/acknowledge"
    same = browser.post(path, headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 404 and "no open alert" in same.json()["detail"]
    cross = browser.post(path, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "Sec-Fetch-Site is 'cross-site'" in cross.json()[
        "detail"]
    bare = browser.post(path)  # a cookie with neither header: not a browser page of ours
    assert bare.status_code == 403 and "neither Origin nor Sec-Fetch-Site" in bare.json()[
        "detail"]
    # reading is never refused, whatever the origin
    assert browser.get("/api/v1/alerts", headers={"Origin": FOREIGN}).status_code == 200


def test_sign_in_and_out_from_another_site_are_refused(cp):
    """A login CSRF (another site's page signing the browser in with the attacker's token)
    and a planted sign-out: refused; the UI's own sign-in and a tool without a browser's
    headers are not."""
    attacker = cp.tokens.create("viewer")
    with TestClient(create_app(cp, run_scraper=False)) as client:
        for headers in ({"Origin": FOREIGN}, {"Sec-Fetch-Site": "cross-site"},
                        {"Origin": "http://testserver.evil.example"}):
            planted = client.post("/api/v1/session", json={"token": attacker},
                                  headers=headers)
            assert planted.status_code == 403, (headers, planted.text)
            assert planted.headers["content-type"] == "application/problem+json"
            assert "this site's own pages" in planted.json()["detail"]
            assert SESSION_COOKIE not in planted.headers.get("set-cookie", "")
        assert not client.cookies.get(SESSION_COOKIE)
        own = client.post("/api/v1/session", json={"token": attacker},
                          headers={"Origin": OWN})
        assert own.status_code == 204 and client.cookies.get(SESSION_COOKIE)
        kept = client.post("/api/v1/logout", headers={"Origin": FOREIGN})
        assert kept.status_code == 403 and client.cookies.get(SESSION_COOKIE)
        assert client.post("/api/v1/logout", headers={"Sec-Fetch-Site": "same-origin"}
                           ).status_code == 204
        assert client.post("/api/v1/session", json={"token": attacker}).status_code == 204


def test_a_bearer_token_is_unaffected_by_origin(cp):
    token = cp.tokens.create("operator")
    with TestClient(create_app(cp, run_scraper=False)) as client:
        for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 7235: case-insensitive
            r = client.post("/api/v1/alerts/7/acknowledge",
                            headers={"Authorization": f"{scheme} {token}", "Origin": FOREIGN})
            assert r.status_code == 404, (scheme, r.text)


def _security_headers(response) -> None:
    h = response.headers
    csp = h["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "same-origin"


def test_every_response_carries_the_security_headers(browser, cp):
    anonymous = TestClient(create_app(cp, run_scraper=False))
    responses = {
        "api": browser.get("/api/v1/overview"),
        "problem 404": browser.get("/api/v1/nodes/nope"),
        "problem 422": browser.get("/api/v1/alerts?limit=0"),
        "problem 401": anonymous.get("/api/v1/overview"),
        "problem 403 (cross-site)": browser.post("/api/v1/reclaim/pause",
                                                 headers={"Origin": FOREIGN}),
        "openapi": browser.get("/api/v1/openapi.json"),
        "healthz": browser.get("/healthz"),
        "docs": browser.get("/api/v1/docs"),
        "docs asset": browser.get("/api/v1/docs/assets/swagger-ui.css"),
        "ui page": browser.get("/gpus"),
        "logout": browser.post("/api/v1/logout", headers={"Origin": OWN}),
    }
    if (DIST / "assets").is_dir():
        asset = next((DIST / "assets").iterdir()).name
        responses["ui asset"] = browser.get(f"/assets/{asset}")
    for what, response in responses.items():
        assert response.status_code < 500 or what == "ui page", (what, response.status_code)
        try:
            _security_headers(response)
        except (AssertionError, KeyError) as exc:
            raise AssertionError(f"{what}: {dict(response.headers)}") from exc
    # the pages with an inline script allow exactly it, by hash
    docs = responses["docs"].headers["content-security-policy"]
    assert docs.count("'sha256-") == 1
    if (DIST / "index.html").is_file():
        assert responses["ui page"].headers["content-security-policy"].count("'sha256-") == 1


def test_cookie_is_secure_behind_a_trusted_tls_proxy_only(tmp_path):
    cp = control_plane(tmp_path, trusted_proxies=["10.0.0.0/24"])
    token = cp.tokens.create("operator")
    app = create_app(cp, run_scraper=False)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}

    def sign_in(client_ip: str) -> tuple[str, TestClient]:
        client = TestClient(app, client=(client_ip, 40000))
        r = client.post("/api/v1/session", json={"token": token}, headers=forwarded)
        assert r.status_code == 204, r.text
        return r.headers["set-cookie"], client

    cookie, via_proxy = sign_in("10.0.0.5")
    assert "; secure" in cookie.lower() and "httponly" in cookie.lower()
    # the proxy's own https origin is this site's origin
    via_proxy.cookies.set(SESSION_COOKIE, token)
    ok = via_proxy.post("/api/v1/alerts/7/acknowledge",
                        headers={**forwarded, "Origin": "https://testserver"})
    assert ok.status_code == 404, ok.text
    # anyone else claiming https is not believed
    cookie, direct = sign_in("10.0.1.5")
    assert "secure" not in cookie.lower()
    direct.cookies.set(SESSION_COOKIE, token)
    refused = direct.post("/api/v1/alerts/7/acknowledge",
                          headers={**forwarded, "Origin": "https://testserver"})
    assert refused.status_code == 403 and "trusted_proxies" in refused.json()["detail"]
    cp.store.close()


def test_with_no_trusted_proxies_forwarded_headers_are_ignored(cp):
    token = cp.tokens.create("viewer")
    client = TestClient(create_app(cp, run_scraper=False), client=("127.0.0.1", 40000))
    r = client.post("/api/v1/session", json={"token": token},
                    headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 204 and "secure" not in r.headers["set-cookie"].lower()
