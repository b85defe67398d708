"""A full disk is a state, not a crash: a real `gpuwarden serve` whose home is a small
tmpfs filled to 0 bytes free keeps answering reads, refuses writes with problem
documents, says "store cannot write: disk full" in /status, logs a line a minute rather
than a traceback a batch, and recovers by itself once space returns."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import stop

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write a file until the file system has not one byte left."""
    with (disk / "filler").open("wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


class Browser:
    """Headless Chromium signed in to ``serve`` (nothing when Chromium is not installed: the
    API half of the test still runs)."""

    def __init__(self, serve) -> None:
        chromium = Path(os.environ.get("GPUWARDEN_CHROMIUM", "/usr/bin/chromium"))
        self.page = None
        if not chromium.exists():
            return
        from playwright.sync_api import sync_playwright

        from tests.e2e.conftest import CHROMIUM_ARGS, DIST
        if not (DIST / "index.html").is_file():
            return
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(base_url=serve.url)
        self.page.set_default_timeout(15_000)
        self.page.goto(f"/login?token={serve.admin}")
        self.page.wait_for_url("**/")

    def banner(self, shown: bool) -> str | None:
        """The store banner's text on a freshly loaded Overview once the page has read
        /status: waited for when it should be ``shown``, "" when there is none."""
        if self.page is None:
            return None
        with self.page.expect_response(lambda r: "/api/v1/status" in r.url):
            self.page.goto("/")
        if shown:
            self.page.wait_for_selector("[data-testid=store-banner]")
            out = Path(__file__).resolve().parents[1] / "e2e" / "output"
            out.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(out / "store-disk-full.png"))
        found = self.page.query_selector("[data-testid=store-banner]")
        return found.inner_text() if found is not None else ""

    def close(self) -> None:
        if self.page is not None:
            self.browser.close()
            self.pw.stop()


def test_serve_on_a_full_disk_reads_reports_and_recovers(small_disk, tmp_path,
                                                         daemon_factory, serve_factory):
    node = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                           "--interval", "0.5", "--sim-profile", "0=train", "--hostname", "n1"])
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({"cluster": "full", "scrape": {"interval": 0.5,
                                                                    "timeout": 1.0},
                                      "watchdog": {"interval": 0.5},
                                      "nodes": [{"name": "n1", "url": node.url}]}))
    home = small_disk / "home"
    serve = serve_factory(config, home)
    serve.wait(lambda: serve.get("/api/v1/status").json()["ingest"]["batches"] >= 3,
               what="batches stored")
    fresh = httpx.post(serve.url + "/api/v1/tokens", json={"role": "viewer", "name": "fresh"},
                       headers={"Authorization": f"Bearer {serve.admin}"}, timeout=10)
    viewer = fresh.json()["token"]  # never used yet: its first use writes last_used_at

    browser = Browser(serve)  # signed in while the disk still has room for the session
    fill(small_disk)
    status = serve.wait(lambda: (lambda s: s if s["ingest"]["write_error"] else None)(
        serve.get("/api/v1/status").json()), timeout=60, what="the store to report disk full")
    assert status["ingest"]["write_error"] == "store cannot write: disk full (0 MB free)"
    failed = status["ingest"]["failed_batches"]
    assert failed >= 1
    serve.wait(lambda: serve.get("/api/v1/status").json()["ingest"]["failed_batches"]
               >= failed + 3, what="more batches dropped while full")

    # reads never fail because of it, with a token whose last_used_at cannot be written
    for path in ("/api/v1/me", "/api/v1/overview", "/api/v1/status", "/api/v1/nodes",
                 "/api/v1/gpus", "/api/v1/gpus/n1/0", "/api/v1/gpus/n1/0/history?range=1h",
                 "/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL", "/api/v1/alerts",
                 "/api/v1/tokens", "/"):
        token = viewer if path != "/api/v1/tokens" else serve.admin
        r = serve.get(path, token=token)
        assert r.status_code in (200, 503 if path == "/" else 200), (path, r.text[:300])
    banner = browser.banner(shown=True)
    if banner is not None:  # Chromium is installed: the UI says it, with the count
        assert "store cannot write: disk full (0 MB free)" in banner, banner
        assert re.search(r"\d+ batch(es)? dropped", banner), banner
    # a write is refused with a problem document that says why
    refused = httpx.post(serve.url + "/api/v1/silences", json={"subject": "n1/*"},
                         headers={"Authorization": f"Bearer {serve.admin}"}, timeout=10)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "cannot write: disk full (0 MB free)" in refused.json()["detail"]

    (small_disk / "filler").unlink()
    recovered = serve.wait(lambda: (lambda s: s if s["ingest"]["write_error"] is None else None)(
        serve.get("/api/v1/status").json()), timeout=30, what="the store writing again")
    batches = recovered["ingest"]["batches"]
    serve.wait(lambda: serve.get("/api/v1/status").json()["ingest"]["batches"] >= batches + 3,
               what="batches stored again")
    made = httpx.post(serve.url + "/api/v1/silences", json={"subject": "n1/*"},
                      headers={"Authorization": f"Bearer {serve.admin}"}, timeout=10)
    assert made.status_code == 201, made.text

    assert browser.banner(shown=False) == "", "the banner stays after the store writes again"
    browser.close()
    stop(serve.proc)
    log = "\n".join(serve.lines)
    assert "Traceback" not in log, log
    full_lines = [line for line in serve.lines if "store cannot write" in line]
    assert 1 <= len(full_lines) <= 2, full_lines  # one a minute, not one a batch
    assert any("the store writes again" in line for line in serve.lines), log
    for db in ("metrics.db", "state.db"):
        with sqlite3.connect(home / db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db
