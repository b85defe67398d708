"""/api/v1/docs works on a machine with no internet: Swagger UI's assets come from the
package, and the page renders the API with every request off this machine blocked."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Browser, Route

from tests.e2e.conftest import Cluster, shot


def test_swagger_ui_renders_with_only_loopback_reachable(browser: Browser,
                                                         cluster: Cluster) -> None:
    ctx = browser.new_context(base_url=cluster.url, viewport={"width": 1280, "height": 900})
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_loopback)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto("/api/v1/docs")
        # Swagger UI renders the document's title and its operations from openapi.json
        page.get_by_role("heading", name="gpuwarden").first.wait_for()
        page.locator(".opblock-summary-path", has_text="/api/v1/overview").first.wait_for()
        assert page.locator(".opblock").count() > 20
        shot(page, "api-docs", full=False)
        assert not blocked, f"the docs page asked for off-machine assets: {blocked}"
        assert not errors, errors
    finally:
        ctx.close()
