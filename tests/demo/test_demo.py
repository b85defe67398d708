"""`gpuwarden demo --headless --duration 90` as a user runs it: a subprocess whose API shows
the local cluster, Slurm jobs across nodes and alerts that fire and resolve, and which
leaves nothing running when it ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow
DURATION = 90


CHROMIUM = Path("/usr/bin/chromium")
DIST = Path(__file__).resolve().parents[2] / "src" / "gpuwarden" / "web" / "dist"
SCREENSHOT = Path(__file__).resolve().parents[1] / "e2e" / "output" / "demo-overview.png"


def overview_in_browser(url: str, token: str, api: httpx.Client) -> None:
    """The dashboard's Overview, signed in through the printed URL, shows the API's numbers
    (and leaves a screenshot: the README's picture is made here)."""
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.conftest import CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{url}/login?token={token}")
        expect(page.get_by_test_id("ov-gpus-total")).to_have_text("12", timeout=20_000)
        deadline = time.monotonic() + 20  # the page follows the stream: compare until equal
        while True:
            o = api.get("/overview").json()
            shown = {k: page.get_by_test_id(k).get_attribute("data-value") for k in (
                "ov-nodes-up", "ov-gpus-total", "ov-slurm-running")}
            wanted = {"ov-nodes-up": str(o["nodes"]["up"]),
                      "ov-gpus-total": str(o["gpus"]["total"]),
                      "ov-slurm-running": str(o["slurm"]["running"])}
            if shown == wanted or time.monotonic() > deadline:
                break
            page.wait_for_timeout(500)
        assert shown == wanted
        page.wait_for_timeout(2500)  # let the fleet map and the stream settle for the picture
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        browser.close()


def demo_processes(home: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if home in line and "ps -eo" not in line]


@pytest.mark.timeout(DURATION + 150)
def test_demo_runs_the_whole_system_and_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the demo's Slurm cluster needs root")
    home = str(tmp_path / "gwhome")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "demo", "--headless", "--duration", str(DURATION),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GPUWARDEN_HOME": home})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                     daemon=True).start()
    try:
        token = None
        deadline = time.monotonic() + 90
        while token is None and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            found = re.search(r"/login\?token=(\S+)", "".join(lines))
            token = found.group(1) if found else None
            time.sleep(0.5)
        assert token, "no sign-in URL printed:\n" + "".join(lines)
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)

        def until(what, check, timeout=60):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                value = check()
                if value:
                    return value
                time.sleep(1)
            jobs = [(j["job_id"], j["name"], j["state"], j["reason"])
                    for j in api.get("/slurm/jobs").json()] if what != "3 nodes x 4 GPUs up" \
                else []
            raise AssertionError(f"timed out: {what}; jobs {jobs}\n" + "".join(lines[-30:]))

        overview = until("3 nodes x 4 GPUs up", lambda: (lambda o: o if o["nodes"]["up"] == 3
                                                         and o["gpus"]["total"] == 12 else None)
                         (api.get("/overview").json()))
        assert overview["cost_per_hour"] > 0
        across = until("a job running across nodes", lambda: [
            j for j in api.get("/slurm/jobs").json()
            if j["state"] == "RUNNING" and len(j["gpu_detail"]) >= 2])
        assert across[0]["name"] == "llm-pretrain"
        until("an alert firing", lambda: api.get("/alerts?state=firing").json())
        resolved = until("an alert resolved", lambda: api.get("/alerts?state=resolved").json(),
                         timeout=DURATION)
        assert resolved[0]["resolved_at"] > resolved[0]["fired_at"]
        assert api.get("/me").json()["role"] == "operator"
        if CHROMIUM.exists() and (DIST / "index.html").is_file():
            overview_in_browser(f"http://127.0.0.1:{port}", token, api)
    finally:
        proc.wait(timeout=DURATION + 60)
    assert proc.returncode == 0, "".join(lines)
    assert "nothing is left running" in "".join(lines)
    time.sleep(1)
    assert demo_processes(home) == []
