"""Reclaim, job reports and efficiency in the browser, against the session's real Slurm
cluster (3 nodes x 2 GPUs), real node daemons whose simulated GPUs follow Slurm (a job's
``gpuwarden:profile=`` comment picks its load), one real ``gpuwarden serve`` with a
compressed reclaim ladder (warnings at 2 s and 4 s of idleness, the action at 60 s, auto) and
headless Chromium:

* the Overview's "Wasting money now" shows an idle job's reclaim stage ("warned 20:31 (2 of
  2), cancels at 20:32"); an operator exempts it (the API then says ``exempt``) and cancels
  another one at once through the confirmation dialog (Slurm says CANCELLED); the $ saved
  shows beside the waste, with its assumption in a tooltip; the kill switch pauses and
  resumes; a viewer sees the stages and no button;
* a finished job's report page, opened from its Slurm queue row, shows the API's
  GPU-hours and $; a job nobody knows says so with the API's words;
* the efficiency page lists the user's row with the API's figures, by user and by
  partition, and its CSV link downloads the CSV.

Screenshots: tests/e2e/output/reclaim-*.png, report-*.png, efficiency-*.png (desktop
1440x900 and phone 390x844)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SubmitOptions
from tests.conftest import Daemon, Serve, start_daemon, start_serve, stop
from tests.e2e.conftest import DIST, _admin_token, eventually, shot
from tests.e2e.conftest import signed_in as signed_in_at
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
NODE_COST = 4.0  # $/hr of a node with 2 GPUs: 2.0 per GPU
LIMIT_MIN = 30
RECLAIM = ("{interval: 1s, jobs: {warn_after: [2s, 4s], act_after: 60s, grace: 1s, "
           "idle_below: 5, mode: auto, action: cancel}}")
WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 5).map(e => `${e.tagName}.${e.className}`.slice(0, 120))"""


@dataclass
class Plane:
    cluster: LocalSlurmCluster
    serve: Serve
    operator: str
    viewer: str
    idle: int  # idle for good: warned twice, then exempted from the browser
    doomed: int  # idle: cancelled from the browser ("Cancel now")
    short: int  # busy for 10 s (scraped, even on a loaded machine), then COMPLETED: its report

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.serve.url + path, timeout=30, headers={
            "Authorization": f"Bearer {self.serve.admin}"}, **kw)

    def get(self, path: str, **kw) -> dict | list:
        r = self.api("GET", path, **kw)
        r.raise_for_status()
        return r.json()

    def candidate(self, job: int) -> dict | None:
        plan = self.get("/api/v1/reclaim")
        return next((c for c in plan["candidates"] if c["key"] == str(job)), None)

    def squeue(self, job: int) -> str:
        """The job's state as Slurm's own squeue shows it, "" once Slurm forgot it."""
        out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T"],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, **self.cluster.env()})
        return out.stdout.strip()


def _reset(cluster: LocalSlurmCluster) -> None:
    adapter = cluster.adapter()
    adapter.run("scancel", ["--user", "root"])
    wait_until("queue empty", lambda: not [j for j in adapter.jobs()
                                          if j.state in ("PENDING", "RUNNING", "COMPLETING")])
    cluster.wait_nodes("idle", timeout_s=30)


def _daemon(cluster: LocalSlurmCluster, node: str, *extra: str) -> Daemon:
    return start_daemon(["--gpu-backend", "sim", "--sim-gpus", "2", "--interval", "1",
                         "--slurm", "--slurm-node", node, "--hostname", node,
                         "--slurm-interval", "1", "--no-auth", *extra], env=cluster.env())


@pytest.fixture(scope="module")
def plane(slurm_cluster: LocalSlurmCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({DIST}/index.html missing): run "
                    "`cd web && npm ci && npm run build`", pytrace=False)
    _reset(slurm_cluster)
    tmp = tmp_path_factory.mktemp("reclaim-ui")
    daemons = [_daemon(slurm_cluster, "node1", "--slurm-controller"),
               _daemon(slurm_cluster, "node2"), _daemon(slurm_cluster, "node3")]
    nodes = "".join(
        f"  - {{name: node{i + 1}, url: '{d.url}', cost_per_hour: {NODE_COST}"
        f"{', role: controller' if i == 0 else ''}}}\n" for i, d in enumerate(daemons))
    config = tmp / "gpuwarden.yaml"
    config.write_text(
        "cluster: reclaim-ui\n"
        "scrape: {interval: 1, timeout: 2}\n"
        "watchdog: {interval: 1}\n"
        "reports: {interval: 1, min_runtime: 1}\n"
        f"reclaim: {RECLAIM}\n"
        f"nodes:\n{nodes}")
    actions = SlurmActions(slurm_cluster.adapter())

    def submit(name: str, profile: str, node: str, script: str = "sleep 600") -> int:
        return actions.submit(f"#!/bin/sh\n{script}\n", SubmitOptions(
            name=name, gres="gpu:1", nodelist=(node,), time=str(LIMIT_MIN),
            output="/dev/null", comment=f"gpuwarden:profile={profile}"))

    # submitted first: Slurm starts them while the control plane comes up
    jobs = (submit("notebook-left-open", "idle", "node1"),
            submit("forgotten-eval", "idle", "node3"),
            submit("quick-finetune", "train", "node2", "sleep 10"))
    serve = _admin_token(start_serve(config, tmp / "home"))
    try:
        def token(role: str, name: str) -> str:
            r = httpx.post(serve.url + "/api/v1/tokens", json={"role": role, "name": name},
                           headers={"Authorization": f"Bearer {serve.admin}"}, timeout=10)
            r.raise_for_status()
            return r.json()["token"]

        p = Plane(slurm_cluster, serve, token("operator", "olivia"), token("viewer", "vic"),
                  *jobs)
        serve.wait(lambda: (p.candidate(p.idle) or {}).get("status") in ("idle", "grace")
                   and p.candidate(p.doomed), timeout=30, what="reclaim watching both idle jobs")
        yield p
    finally:
        stop(serve.proc, signal.SIGKILL)
        for d in daemons:
            stop(d.proc)
        _reset(slurm_cluster)


def amount(v: float) -> str:
    """Dollars as the UI's money.amount shows them."""
    return "<$0.01" if 0 < v < 0.005 else f"${v:,.2f}"


def signed_in(browser: Browser, plane: Plane, token: str, viewport: dict = DESKTOP
              ) -> tuple[BrowserContext, Page]:
    return signed_in_at(browser, plane.serve.url, token, viewport)


def no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], (f"{page.url} is {width[0]} px wide in a {width[1]} px "
                                  f"window: {page.evaluate(WIDEST)}")


def test_the_overview_shows_reclaim_stages_and_an_operator_exempts_and_acts(
        browser: Browser, plane: Plane) -> None:
    idle, doomed = plane.idle, plane.doomed
    ctx, page = signed_in(browser, plane, plane.operator)
    try:
        page.goto("/")
        stage = page.get_by_test_id("wasters").get_by_test_id(f"reclaim-stage-{idle}")
        # warned twice (2 s, 4 s of idleness), the cancellation due at 60 s
        expect(stage).to_contain_text(re.compile(r"warned \d\d:\d\d \(2 of 2\), cancels at "
                                                 r"\d\d:\d\d"), timeout=30_000)
        assert plane.candidate(idle)["warnings_sent"] == 2
        panel = page.get_by_test_id("reclaim-panel")
        expect(panel.get_by_test_id(f"reclaim-row-{idle}")).to_contain_text("cancels at")
        expect(panel.get_by_test_id("reclaim-ladder")).to_contain_text("auto")

        # Exempt: the dialog shows the command, nothing happens before the confirmation
        page.get_by_test_id("wasters").get_by_test_id(f"reclaim-exempt-{idle}").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog).to_contain_text(f"Exempt job {idle} from reclaim?")
        expect(dialog.get_by_test_id("action-command")).to_have_text(
            f"gpuwarden reclaim exempt {idle}")
        assert plane.candidate(idle)["status"] == "idle"
        shot(page, "reclaim-desktop-exempt-dialog", full=False)
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text(
            f"job {idle} exempted by olivia")
        dialog.get_by_test_id("action-close").click()
        plane.serve.wait(lambda: plane.candidate(idle)["status"] == "exempt", timeout=10,
                         what="the API saying exempt")
        assert plane.candidate(idle)["why"] == "exempted by olivia"
        expect(stage).to_have_text("exempted by olivia", timeout=10_000)
        expect(page.get_by_test_id(f"reclaim-exempt-{idle}")).to_have_count(0)

        # Cancel now: the policy's action at once; Slurm's own squeue agrees
        page.get_by_test_id("wasters").get_by_test_id(f"reclaim-act-{doomed}").click()
        expect(dialog.get_by_test_id("action-command")).to_have_text(f"scancel {doomed}")
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text(f"job {doomed}: acted")
        dialog.get_by_test_id("action-close").click()
        wait_until("Slurm cancelling it", lambda: plane.squeue(doomed) in ("CANCELLED", ""))

        # $ saved: the cancelled GPU's $/hr until its time limit, as the overview says
        saved = plane.serve.wait(lambda: plane.get("/api/v1/overview")["reclaim_saved_today"],
                                 timeout=10, what="$ saved today")
        assert 0 < saved <= 2.0 * LIMIT_MIN / 60 + 1e-6
        expect(page.get_by_test_id("ov-saved-today")).not_to_have_attribute("data-value", "0")
        shown = float(page.get_by_test_id("ov-saved-today").get_attribute("data-value") or 0)
        assert shown == pytest.approx(saved, abs=0.02)
        page.get_by_test_id("ov-saved-hint").click()
        expect(page.get_by_test_id("ov-saved-hint-text").first).to_contain_text(
            "until its time limit would have ended it, at most 24 h")
        shot(page, "reclaim-desktop-overview-tooltip", full=False)
        page.keyboard.press("Escape")

        # the kill switch
        panel.get_by_test_id("reclaim-pause").click()
        expect(dialog.get_by_test_id("action-command")).to_have_text("gpuwarden reclaim pause")
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text("reclaim paused")
        dialog.get_by_test_id("action-close").click()
        assert plane.get("/api/v1/reclaim")["enabled"] is False
        expect(panel.get_by_test_id("reclaim-paused")).to_be_visible()
        panel.get_by_test_id("reclaim-resume").click()
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text("reclaim resumed")
        dialog.get_by_test_id("action-close").click()
        assert plane.get("/api/v1/reclaim")["enabled"] is True
        expect(panel.get_by_test_id("reclaim-pause")).to_be_visible()
        no_horizontal_overflow(page)
        page.evaluate("window.scrollTo(0, 0)")  # a full-page shot draws the sticky header here
        page.wait_for_timeout(300)  # the fleet map's cards settle
        shot(page, "reclaim-desktop-overview")
        page.set_viewport_size(PHONE)
        expect(page.get_by_test_id(f"reclaim-act-{idle}").first).to_be_visible()
        eventually(lambda: no_horizontal_overflow(page), what="the phone overview fits")
        shot(page, "reclaim-phone-overview-operator")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()

    # a viewer sees the stages, the $ saved and no lever; on a phone it all fits
    ctx, page = signed_in(browser, plane, plane.viewer, PHONE)
    try:
        page.goto("/")
        expect(page.get_by_test_id(f"reclaim-stage-{idle}").first).to_have_text(
            "exempted by olivia")
        expect(page.get_by_test_id("ov-saved")).to_contain_text("this month")
        expect(page.locator("[data-testid^=reclaim-exempt-], [data-testid^=reclaim-act-], "
                            "[data-testid=reclaim-pause], [data-testid=reclaim-resume]")
               ).to_have_count(0)
        no_horizontal_overflow(page)
        shot(page, "reclaim-phone-overview-viewer")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_a_finished_jobs_report_page_shows_the_apis_gpu_hours_and_dollars(
        browser: Browser, plane: Plane) -> None:
    job = plane.short
    stored = plane.serve.wait(lambda: (r := plane.api(
        "GET", f"/api/v1/slurm/jobs/{job}/report")).status_code == 200
        and r.json()["source"] == "stored" and r.json(), timeout=40, what="its stored report")
    assert stored["gpus"] == 1 and stored["gpu_hours"] > 0 and stored["cost"] > 0
    ctx, page = signed_in(browser, plane, plane.operator)
    try:
        page.goto("/slurm")
        expect(page.get_by_test_id(f"job-report-{job}")).to_have_text("Report")
        shot(page, "report-desktop-slurm-queue", full=False)
        page.get_by_test_id(f"job-report-{job}").click()
        page.wait_for_url(f"**/slurm/jobs/{job}/report")
        report = page.get_by_test_id("job-report")
        expect(report).to_have_attribute("data-source", "stored")
        expect(page.get_by_test_id("report-title")).to_contain_text("quick-finetune")
        expect(page.get_by_test_id("report-title")).to_contain_text("completed")
        hours = page.get_by_test_id("report-gpu-hours-value").locator("[data-value]")
        assert float(hours.get_attribute("data-value") or 0) == stored["gpu_hours"]
        cost = page.get_by_test_id("report-cost-value")
        assert float(cost.locator("[data-value]").get_attribute("data-value") or 0) == \
            stored["cost"]
        expect(cost).to_have_text(amount(stored["cost"]))
        wasted = page.get_by_test_id("report-wasted-value")
        expect(wasted).to_have_text(amount(stored["wasted"]))
        gpu = stored["per_gpu"][0]
        expect(page.get_by_test_id(f"report-gpu-{gpu['node']}/{gpu['index']}")).to_be_visible()
        expect(page.get_by_test_id("grade-gpu_utilization")).to_have_attribute(
            "data-grade", stored["grades"][0]["grade"])
        expect(page.get_by_test_id("report-elapsed")).not_to_have_text("–")
        page.wait_for_timeout(200)
        no_horizontal_overflow(page)
        shot(page, "report-desktop")
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        no_horizontal_overflow(page)
        shot(page, "report-phone")
        # a job nobody has heard of: the API's own words
        page.goto("/slurm/jobs/999999/report")
        missing = page.get_by_test_id("report-missing")
        detail = plane.api("GET", "/api/v1/slurm/jobs/999999/report").json()["detail"]
        expect(missing).to_contain_text(detail)
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_the_efficiency_page_lists_the_users_row_and_its_csv(browser: Browser,
                                                            plane: Plane) -> None:
    plane.serve.wait(lambda: plane.api("GET", f"/api/v1/slurm/jobs/{plane.short}/report")
                     .json().get("source") == "stored", timeout=40, what="a stored summary")
    api = plane.get("/api/v1/reports/efficiency", params={"since": "24h", "by": "user"})
    root = next(r for r in api["rows"] if r["key"] == "root")
    ctx, page = signed_in(browser, plane, plane.viewer)
    try:
        page.get_by_role("navigation", name="Main", exact=True).get_by_role(
            "link", name=re.compile("Efficiency")).click()
        page.wait_for_url("**/efficiency")
        page.get_by_role("group", name="Since").get_by_role("button", name="24h").click()
        page.wait_for_url("**/efficiency?since=24h")
        row = page.get_by_test_id("eff-row-root")
        expect(row).to_contain_text(root["rank_text"])
        assert float(row.get_by_test_id("eff-gpu-hours").get_attribute("data-value") or 0) \
            == pytest.approx(root["gpu_hours"], rel=1e-9)
        expect(row.get_by_test_id("eff-cost")).to_have_text(amount(root["cost"]))
        expect(row.get_by_test_id("eff-wasted")).to_contain_text(amount(root["wasted"]))
        csv = page.get_by_test_id("eff-csv")
        assert csv.get_attribute("href") == \
            "/api/v1/reports/efficiency?since=24h&by=user&format=csv"
        got = page.request.get(csv.get_attribute("href") or "")  # the session cookie
        assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
        assert got.text().splitlines()[0].startswith("rank,user,jobs,gpu_hours")
        no_horizontal_overflow(page)
        shot(page, "efficiency-desktop")

        page.get_by_role("group", name="Group by").get_by_role("button", name="partition").click()
        partition = plane.get("/api/v1/reports/efficiency",
                              params={"since": "24h", "by": "partition"})["rows"][0]
        expect(page.get_by_test_id("eff-report")).to_have_attribute("data-by", "partition")
        expect(page.get_by_test_id(f"eff-row-{partition['key']}")).to_be_visible()
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        no_horizontal_overflow(page)
        shot(page, "efficiency-phone")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
