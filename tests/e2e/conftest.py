"""Browser end-to-end tests: real sim node daemons, a real ``gpuwarden serve`` serving the built
UI, and headless Chromium driven by Playwright (its Python package ships the driver; the browser
is the system's /usr/bin/chromium, which ``make test`` installs)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Daemon, Serve, free_port, start_daemon, start_serve, stop

CHROMIUM = Path(os.environ.get("GPUWARDEN_CHROMIUM", "/usr/bin/chromium"))
DIST = ROOT / "src" / "gpuwarden" / "web" / "dist"
OUTPUT = Path(__file__).resolve().parent / "output"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
                "(make test does) to run the browser tests", allow_module_level=True)

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - a setup problem, said plainly
    pytest.fail("the browser tests need the `playwright` Python package: "
                "pip install -e '.[test]' (it is in the test extras)", pytrace=False)

# How long an expect() waits for its condition: 5 s (Playwright's default) was too short
# for an action that goes through Slurm on a machine running two test workers at once.
# A condition that holds returns at once whatever this is.
expect.set_options(timeout=20_000)


class Cluster:
    """Two sim nodes and a configured node that never answers, behind one control plane."""

    def __init__(self, serve: Serve, daemons: list[Daemon], config: Path, home: Path,
                 port: int) -> None:
        self.serve, self.daemons, self.config, self.home, self.port = (
            serve, daemons, config, home, port)

    @property
    def url(self) -> str:
        return self.serve.url

    def api(self, path: str) -> dict | list:
        r = self.serve.get(path)
        r.raise_for_status()
        return r.json()

    def restart_serve(self) -> None:
        admin = self.serve.admin
        self.serve = start_serve(self.config, self.home, self.port)
        self.serve.admin = admin  # shown on first start only


def _admin_token(serve: Serve, timeout: float = 5.0) -> Serve:
    """The first start prints the admin token on the line after "shown this once"; the output
    reader may still be catching up when /healthz first answers."""
    deadline = time.monotonic() + timeout
    while not serve.admin and time.monotonic() < deadline:
        for i, line in enumerate(serve.lines):
            if "shown this once" in line and i + 1 < len(serve.lines):
                serve.admin = serve.lines[i + 1].strip()
        time.sleep(0.05)
    if not serve.admin:
        raise AssertionError("serve printed no admin token: " + "\n".join(serve.lines))
    return serve


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({DIST}/index.html missing): run "
                    "`cd web && npm ci && npm run build` (make test does it first)", pytrace=False)
    tmp = tmp_path_factory.mktemp("e2e")
    common = ["--gpu-backend", "sim", "--no-auth", "--interval", "1"]
    daemons = [
        start_daemon([*common, "--sim-gpus", "2", "--sim-profile", "0=idle,1=train",
                      "--hostname", "node1"]),
        start_daemon([*common, "--sim-gpus", "3", "--sim-profile",
                      "0=train,1=thermal-throttle,2=lost", "--hostname", "node2"]),
    ]
    dead = f"http://127.0.0.1:{free_port()}"  # configured, never answers
    config = tmp / "gpuwarden.yaml"
    config.write_text(
        "cluster: e2e\n"
        "scrape: {interval: 1, timeout: 1}\n"
        "nodes:\n"
        f"  - {{name: node1, url: '{daemons[0].url}', cost_per_hour: 8.0}}\n"
        f"  - {{name: node2, url: '{daemons[1].url}', cost_per_hour: 6.0}}\n"
        f"  - {{name: node3, url: '{dead}', cost_per_hour: 4.0}}\n"
    )
    port = free_port()
    serve = _admin_token(start_serve(config, tmp / "home", port))
    c = Cluster(serve, daemons, config, tmp / "home", port)
    try:
        serve.wait(lambda: (o := c.api("/api/v1/overview"))["nodes"]["up"] == 2
                   and o["gpus"]["total"] == 5 and o, timeout=20, what="both sim nodes scraped")
        yield c
    finally:
        stop(c.serve.proc, signal.SIGKILL)
        for d in daemons:
            stop(d.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser, cluster: Cluster) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=cluster.url, viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def sign_in(context: BrowserContext, token: str) -> Page:
    """A new page of ``context`` signed in with ``token`` (the /login?token= link sets the
    session cookie); ``page.errors`` collects the page's JavaScript errors."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"/login?token={token}")
    pg.wait_for_url("**/")
    pg.errors = errors  # type: ignore[attr-defined]
    return pg


def signed_in(browser: Browser, url: str, token: str,
              viewport: dict | None = None) -> tuple[BrowserContext, Page]:
    """A fresh browser context on ``url`` and a page in it signed in with ``token``."""
    ctx = browser.new_context(base_url=url, viewport=viewport or {"width": 1440, "height": 900})
    ctx.set_default_timeout(15_000)
    return ctx, sign_in(ctx, token)


@pytest.fixture
def page(context: BrowserContext, cluster: Cluster) -> Page:
    """A signed-in page."""
    return sign_in(context, cluster.serve.admin)


def shot(page: Page, name: str, full: bool = True) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=full)


def eventually(check, timeout: float = 10.0, what: str = "condition"):
    """Retry `check` (which raises AssertionError) until it passes: live figures move between
    the moment the page shows them and the moment the API is read."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def wait_http(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
