"""Operators act from the UI, against a real Slurm cluster (3 nodes x 2 GPUs, the session's
``slurm_cluster``), real node daemons with --slurm, a real ``gpuwarden serve`` and headless
Chromium: an operator cancels a job, releases a held one, drains and resumes a node and
silences an alert, each through a confirmation dialog that shows the Slurm command; Slurm's
own ``squeue``/``sinfo`` confirm it and the audit log names the operator. A viewer sees no
action. The Slurm page fits a 390 px phone and every page is reachable from its nav; history
charts start at the first sample; the GPU search finds jobs by id and name.
Screenshots: tests/e2e/output/ops-*.png."""

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
from tests.e2e.conftest import DIST, _admin_token, eventually, shot, sign_in
from tests.e2e.conftest import signed_in as signed_in_at
from tests.waiting import wait_until  # slurm_cluster comes from tests/conftest.py

pytestmark = pytest.mark.slow

SLEEP = "#!/bin/sh\nsleep 600\n"
REASON = "e2e: fan noise on GPU 1, it's loud"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
NAV = [("Overview", "/"), ("GPUs", "/gpus"), ("Nodes", "/nodes"), ("Slurm", "/slurm"),
       ("Alerts", "/alerts"), ("Ask", "/agent")]


@dataclass
class Ops:
    cluster: LocalSlurmCluster
    actions: SlurmActions
    serve: Serve
    operator: str
    viewer: str

    def api(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        return httpx.request(method, self.serve.url + path, timeout=30, headers={
            "Authorization": f"Bearer {token or self.serve.admin}"}, **kw)

    def get(self, path: str) -> list | dict:
        r = self.api("GET", path)
        r.raise_for_status()
        return r.json()

    def slurm(self, *argv: str) -> str:
        """Slurm's own command line, on this cluster's SLURM_CONF."""
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                             env={**os.environ, **self.cluster.env()})
        return out.stdout.strip()

    def squeue_state(self, job: int) -> str:
        """The job's state as squeue shows it (all states), "" once Slurm forgot it."""
        return self.slurm("squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T")

    def sinfo(self, node: str) -> tuple[str, str]:
        """(state, reason) of a node as sinfo shows them."""
        state, _, reason = self.slurm("sinfo", "-h", "-N", "-n", node, "-o", "%T|%E").partition("|")
        return state.lower(), reason

    def submit(self, name: str, **kw) -> int:
        job = self.actions.submit(SLEEP, SubmitOptions(name=name, **kw))
        self.serve.wait(lambda: any(j["job_id"] == job for j in self.get("/api/v1/slurm/jobs")),
                        timeout=30, what=f"job {job} through the control plane")
        return job

    def job(self, job: int) -> dict | None:
        return next((j for j in self.get("/api/v1/slurm/jobs") if j["job_id"] == job), None)


def _slurm_daemon(cluster: LocalSlurmCluster, node: str, *extra: str) -> Daemon:
    return start_daemon(["--gpu-backend", "sim", "--sim-gpus", "2", "--interval", "1",
                         "--slurm", "--slurm-node", node, "--hostname", node,
                         "--slurm-interval", "1", "--no-auth", *extra],
                        env=cluster.env())


def _reset(cluster: LocalSlurmCluster) -> None:
    adapter = cluster.adapter()
    adapter.run("scancel", ["--user", "root"])
    wait_until("queue empty", lambda: not [j for j in adapter.jobs()
                                          if j.state in ("PENDING", "RUNNING", "COMPLETING")])
    for node in adapter.nodes().nodes:
        if node.reason:
            adapter.run("scontrol", ["update", f"NodeName={node.name}", "State=RESUME"])
    cluster.wait_nodes("idle", timeout_s=30)


@pytest.fixture(scope="module")
def ops(slurm_cluster: LocalSlurmCluster,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({DIST}/index.html missing): run "
                    "`cd web && npm ci && npm run build`", pytrace=False)
    _reset(slurm_cluster)
    tmp = tmp_path_factory.mktemp("ops-e2e")
    # node3's GPU 1 falls off the bus: a firing alert for the Alerts page from the start
    daemons = [_slurm_daemon(slurm_cluster, "node1", "--slurm-controller"),
               _slurm_daemon(slurm_cluster, "node2"),
               _slurm_daemon(slurm_cluster, "node3", "--sim-profile", "1=lost")]
    config = tmp / "gpuwarden.yaml"
    config.write_text(
        "cluster: ops-e2e\n"
        "scrape: {interval: 1, timeout: 2}\n"
        "watchdog: {interval: 1}\n"
        "nodes:\n"
        f"  - {{name: node1, url: '{daemons[0].url}', role: controller, cost_per_hour: 4.0}}\n"
        f"  - {{name: node2, url: '{daemons[1].url}', cost_per_hour: 4.0}}\n"
        f"  - {{name: node3, url: '{daemons[2].url}', cost_per_hour: 4.0}}\n")
    serve = _admin_token(start_serve(config, tmp / "home"))
    try:
        o = Ops(slurm_cluster, SlurmActions(slurm_cluster.adapter()), serve, "", "")

        def token(role: str, name: str) -> str:
            r = o.api("POST", "/api/v1/tokens", json={"role": role, "name": name})
            r.raise_for_status()
            return r.json()["token"]

        o.operator, o.viewer = token("operator", "olivia"), token("viewer", "vic")
        serve.wait(lambda: (ov := o.get("/api/v1/overview"))["slurm"] is not None
                   and ov["nodes"]["up"] == 3, timeout=30, what="Slurm through the control plane")
        serve.wait(lambda: len(o.get("/api/v1/slurm/nodes")) == 3, what="three Slurm nodes")
        yield o
    finally:
        stop(serve.proc, signal.SIGKILL)
        for d in daemons:
            stop(d.proc)
        _reset(slurm_cluster)


def signed_in(browser: Browser, ops: Ops, token: str, viewport: dict = DESKTOP,
              ) -> tuple[BrowserContext, Page]:
    return signed_in_at(browser, ops.serve.url, token, viewport)


WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 5).map(e => `${e.tagName}.${e.className}`.slice(0, 120))"""


def no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], (f"{page.url} is {width[0]} px wide in a {width[1]} px "
                                  f"window: {page.evaluate(WIDEST)}")


def test_an_operator_cancels_a_job_and_drains_a_node(browser: Browser, ops: Ops) -> None:
    job = ops.submit("e2e-cancel-me", nodelist=("node2",), gres="gpu:1")
    ops.serve.wait(lambda: ops.squeue_state(job) == "RUNNING", what=f"job {job} running")
    # the control plane sees it through the controller's Slurm collector, a scrape later
    ops.serve.wait(lambda: (ops.job(job) or {}).get("state") == "RUNNING", timeout=30,
                   what=f"job {job} running through the control plane")
    ctx, page = signed_in(browser, ops, ops.operator)
    try:
        # cancel from the queue's row menu: the dialog shows scancel, then the API's answer
        page.goto("/slurm")
        row = page.get_by_test_id(f"job-row-{job}")
        expect(row).to_contain_text("e2e-cancel-me")
        expect(row).to_contain_text("running")
        row.get_by_test_id(f"job-actions-{job}").click()
        page.get_by_test_id(f"job-cancel-{job}").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog).to_contain_text(f"Cancel job {job}?")
        expect(dialog.get_by_test_id("action-command")).to_have_text(f"scancel {job}")
        assert ops.squeue_state(job) == "RUNNING"  # nothing ran before the confirmation
        shot(page, "ops-dialog-cancel", full=False)
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text(f"job {job}: cancel done")
        ops.serve.wait(lambda: ops.squeue_state(job) in ("CANCELLED", ""),
                       what=f"squeue: job {job} cancelled")
        shot(page, "ops-dialog-cancel-done", full=False)
        dialog.get_by_test_id("action-close").click()
        expect(dialog).to_have_count(0)
        # The queue page stays open: its row must stop saying "running" by itself (the page
        # polls Slurm every 15 s), checked below while the drain happens in a second tab.

        # drain from the Nodes page: the reason is asked for, and is in the command shown
        nodes = sign_in(ctx, ops.operator)
        nodes.goto("/nodes")
        node_row = nodes.get_by_test_id("node-row-node3")
        expect(node_row.get_by_test_id("node-slurm-state")).to_contain_text("idle")
        node_row.get_by_test_id("node-drain-node3").click()
        dialog = nodes.get_by_test_id("action-dialog")
        expect(dialog.get_by_test_id("action-confirm")).to_be_disabled()  # no reason yet
        expect(dialog.get_by_test_id("action-problem")).to_contain_text("Say why")
        dialog.get_by_test_id("drain-reason").fill('fan "noise"')  # scontrol would mangle it
        expect(dialog.get_by_test_id("action-problem")).to_contain_text("double quotes")
        expect(dialog.get_by_test_id("action-confirm")).to_be_disabled()
        dialog.get_by_test_id("drain-reason").fill(REASON)
        expect(dialog.get_by_test_id("action-command")).to_have_text(
            f'scontrol update NodeName=node3 State=DRAIN Reason="{REASON}"')
        shot(nodes, "ops-dialog-drain", full=False)
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text("node node3: drain done")
        state, reason = ops.sinfo("node3")
        assert "drain" in state and reason == REASON, (state, reason)
        dialog.get_by_test_id("action-close").click()

        # both pages follow Slurm without a reload: the cancelled job, the drained node
        expect(row.get_by_text("running")).to_have_count(0, timeout=20_000)
        expect(node_row.get_by_test_id("node-slurm-state")).to_contain_text("drain",
                                                                            timeout=20_000)
        expect(node_row.get_by_test_id("node-resume-node3")).to_be_visible()

        # the audit log names the operator's token for both
        audit = [(e["actor"], e["action"], e["target"], e["outcome"])
                 for e in ops.get("/api/v1/audit")]
        assert ("olivia", "cancel_job", str(job), "executed") in audit, audit
        assert ("olivia", "drain_node", "node3", "executed") in audit, audit

        # resume from the Slurm page's node list (the queue page, still open: it follows)
        srow = page.get_by_test_id("slurm-node-node3")
        expect(srow.get_by_test_id("slurm-node-reason")).to_contain_text(
            "e2e: fan noise on GPU 1", timeout=20_000)
        srow.get_by_test_id("node-resume-node3").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog.get_by_test_id("action-command")).to_have_text(
            "scontrol update NodeName=node3 State=RESUME")
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text("node node3: resume done")
        ops.serve.wait(lambda: "drain" not in ops.sinfo("node3")[0], what="sinfo: node3 resumed")
        dialog.get_by_test_id("action-close").click()
        assert ("olivia", "resume_node", "node3", "executed") in [
            (e["actor"], e["action"], e["target"], e["outcome"]) for e in ops.get("/api/v1/audit")]
        assert not page.errors and not nodes.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_the_api_error_is_shown_and_a_held_job_is_released(browser: Browser, ops: Ops) -> None:
    held = ops.submit("e2e-held", hold=True, nodelist=("node1",), gres="gpu:1")
    gone = ops.submit("e2e-gone", hold=True)
    ctx, page = signed_in(browser, ops, ops.operator)
    try:
        # a job that ends between the dialog opening and the confirmation: the API's detail
        page.goto(f"/slurm/jobs/{gone}")
        page.get_by_test_id(f"job-cancel-{gone}").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog.get_by_test_id("action-command")).to_have_text(f"scancel {gone}")
        ops.slurm("scancel", str(gone))
        ops.serve.wait(lambda: ops.squeue_state(gone) in ("CANCELLED", ""), what="gone")
        dialog.get_by_test_id("action-confirm").click()
        error = dialog.get_by_test_id("action-error")
        expect(error).to_be_visible()
        r = ops.api("POST", f"/api/v1/slurm/jobs/{gone}/cancel", token=ops.operator)
        assert r.status_code >= 400 and r.json()["detail"]
        expect(error).to_have_text(r.json()["detail"])  # the problem's detail, as the API says
        shot(page, "ops-dialog-error", full=False)
        assert ("olivia", "cancel_job", str(gone), "failed") in [
            (e["actor"], e["action"], e["target"], e["outcome"]) for e in ops.get("/api/v1/audit")]
        dialog.get_by_test_id("action-close").click()

        # a held job's page offers Release (not Hold); releasing it lets Slurm start it
        page.goto(f"/slurm/jobs/{held}")
        expect(page.get_by_test_id(f"job-hold-{held}")).to_have_count(0)
        page.get_by_test_id(f"job-release-{held}").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog.get_by_test_id("action-command")).to_have_text(f"scontrol release {held}")
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text(f"job {held}: release done")
        ops.serve.wait(lambda: ops.squeue_state(held) == "RUNNING", what="released job running")
        dialog.get_by_test_id("action-close").click()
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
        ops.slurm("scancel", str(held))


def test_an_operator_silences_an_alert(browser: Browser, ops: Ops) -> None:
    alert = ops.serve.wait(lambda: next((a for a in ops.get("/api/v1/alerts?state=firing")
                                         if a["rule"] == "gpu_lost"), None),
                           timeout=30, what="node3's lost GPU firing")
    ctx, page = signed_in(browser, ops, ops.operator)
    try:
        page.goto("/alerts")
        item = page.get_by_test_id(f"alert-{alert['id']}")
        item.get_by_test_id(f"silence-{alert['id']}").click()
        dialog = page.get_by_test_id("action-dialog")
        expect(dialog.get_by_test_id("silence-rule")).to_have_value("gpu_lost")
        expect(dialog.get_by_test_id("silence-subject")).to_have_value(alert["subject"])
        dialog.get_by_test_id("silence-duration").fill("2 hours")
        expect(dialog.get_by_test_id("action-confirm")).to_be_disabled()
        dialog.get_by_test_id("silence-duration").fill("30m")
        dialog.get_by_test_id("silence-comment").fill("replacing the GPU")
        expect(dialog.get_by_test_id("action-command")).to_have_text(
            f"rule: gpu_lost\nsubject: {alert['subject']}\nduration: 30m\n"
            "comment: replacing the GPU")
        shot(page, "ops-dialog-silence", full=False)
        dialog.get_by_test_id("action-confirm").click()
        expect(dialog.get_by_test_id("action-result")).to_contain_text(
            "created by olivia")
        silences = ops.get("/api/v1/silences")
        assert [(s["rule"], s["subject"], s["author"], s["comment"]) for s in silences] == [
            ("gpu_lost", alert["subject"], "olivia", "replacing the GPU")]
        assert 1700 <= silences[0]["expires_at"] - silences[0]["created_at"] <= 1900
        dialog.get_by_test_id("action-close").click()
        expect(item).to_contain_text("silenced", timeout=20_000)
        expect(item.get_by_test_id(f"silence-{alert['id']}")).to_have_count(0)
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
        for s in ops.get("/api/v1/silences"):
            ops.api("DELETE", f"/api/v1/silences/{s['id']}")


ACTION_SELECTOR = ("[data-testid^=job-actions-], [data-testid^=job-cancel-], "
                   "[data-testid^=job-hold-], [data-testid^=job-release-], "
                   "[data-testid^=node-drain-], [data-testid^=node-resume-], "
                   "[data-testid^=silence-], [data-testid^=ack-]")


def test_a_viewer_sees_no_action_button(browser: Browser, ops: Ops) -> None:
    job = ops.submit("e2e-viewer-sees", hold=True)
    alerts = ops.serve.wait(lambda: ops.get("/api/v1/alerts?state=firing"), timeout=30,
                            what="a firing alert")
    pages = [("/slurm", f"job-row-{job}"), (f"/slurm/jobs/{job}", "job-title"),
             ("/nodes", "node-row-node3"), ("/nodes/node3", "node-slurm-state"),
             ("/alerts", f"alert-{alerts[0]['id']}")]
    try:
        for token, who in ((ops.operator, "operator"), (ops.viewer, "viewer")):
            ctx, page = signed_in(browser, ops, token)
            try:
                expect(page.get_by_test_id("role")).to_have_text(who)
                for path, ready in pages:
                    page.goto(path)
                    expect(page.get_by_test_id(ready)).to_be_visible()
                    buttons = page.locator(ACTION_SELECTOR)
                    if who == "operator":  # the same pages do offer actions to an operator
                        expect(buttons.first).to_be_visible()
                    else:
                        expect(buttons).to_have_count(0)
                if who == "viewer":
                    shot(page, "ops-alerts-viewer")
                assert not page.errors  # type: ignore[attr-defined]
            finally:
                ctx.close()
        # and the API refuses a viewer anyway
        r = ops.api("POST", f"/api/v1/slurm/jobs/{job}/cancel", token=ops.viewer)
        assert r.status_code == 403
    finally:
        ops.slurm("scancel", str(job))


def test_the_slurm_page_fits_a_phone_and_every_page_is_reachable(browser: Browser,
                                                                   ops: Ops) -> None:
    jobs = [ops.submit("a-rather-long-training-job-name-for-a-phone", nodelist=("node1",),
                       gres="gpu:2"),
            ops.submit("waits-behind-it", nodelist=("node1",), gres="gpu:2"),
            ops.submit("held-one", hold=True)]
    ctx, page = signed_in(browser, ops, ops.operator, PHONE)
    try:
        page.goto("/slurm")
        for j in jobs:
            expect(page.get_by_test_id(f"job-row-{j}")).to_be_visible()
        eventually(lambda: no_horizontal_overflow(page), what="no horizontal overflow")
        table = page.get_by_test_id("queue-table")
        headers = [h.strip() for h in table.locator("thead th:visible").all_inner_texts()]
        assert headers[:4] == ["Job", "User", "State", "GPUs"], headers
        box = table.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        for j in jobs:
            row = page.get_by_test_id(f"job-row-{j}")
            h = row.bounding_box()["height"]  # type: ignore[index]
            assert h <= 80, f"job {j}'s row is {h:.0f} px tall"
            for text in (str(j), "root"):
                expect(row).to_contain_text(text)
        expect(page.get_by_test_id(f"job-row-{jobs[1]}")).to_contain_text("pending")
        header = page.locator("header").bounding_box()
        assert header and header["height"] <= 100, header
        shot(page, "ops-phone-slurm")
        # the row menu works at this width too
        page.get_by_test_id(f"job-actions-{jobs[2]}").click()
        page.get_by_test_id(f"job-release-{jobs[2]}").click()
        expect(page.get_by_test_id("action-command")).to_have_text(f"scontrol release {jobs[2]}")
        no_horizontal_overflow(page)
        shot(page, "ops-phone-dialog", full=False)
        page.get_by_test_id("action-close").click()

        nav = page.get_by_role("navigation", name="Main (compact)")
        expect(nav).to_be_visible()
        expect(page.get_by_role("navigation", name="Main", exact=True)).to_be_hidden()
        for label, path in NAV:
            link = nav.get_by_role("link", name=re.compile(f"^{label}"))
            link.scroll_into_view_if_needed()
            link.click()
            page.wait_for_url(re.compile(re.escape(ops.serve.url + path) + r"(\?.*)?$"))
            expect(page.locator("main h1").first).to_be_visible()
            expect(link).to_have_attribute("aria-current", "page")
            eventually(lambda: no_horizontal_overflow(page), what=f"{label}: no overflow")
            if label in ("GPUs", "Nodes", "Alerts"):
                page.wait_for_timeout(300)  # let the live cards draw their sparklines
                shot(page, f"ops-phone-{label.lower()}")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
        for j in jobs:
            ops.slurm("scancel", str(j))


def test_history_chart_starts_at_the_first_sample(browser: Browser, ops: Ops) -> None:
    """The control plane has stored a few minutes at most: a 1 h or 24 h chart starts at the
    first sample (within a fine step), not at the range's start with the data in a sliver."""
    now = ops.get("/api/v1/gpus/node2/0/history?range=1h")["end"]
    fine = ops.get(f"/api/v1/gpus/node2/0/history?start={now - 1800}&end={now}")
    first = min(p[0] for pts in fine["series"].values() for p in pts)
    assert now - first < 900  # fresh data, so the check below means something
    ctx, page = signed_in(browser, ops, ops.viewer)
    try:
        for rng, seconds in (("1h", 3600), ("24h", 86400)):
            page.goto(f"/gpus/node2/0{'' if rng == '1h' else '?range=' + rng}")
            chart = page.get_by_test_id("chart-DCGM_FI_DEV_GPU_UTIL").locator("[data-xmin]")
            expect(chart).to_have_count(1)
            expect(page.get_by_test_id("history-fit")).to_contain_text("Data since")

            def starts_at_first(rng: str = rng, seconds: int = seconds,
                                chart=chart) -> None:
                xmin = float(chart.get_attribute("data-xmin") or "nan")
                xmax = float(chart.get_attribute("data-xmax") or "nan")
                assert xmax - xmin < 0.25 * seconds, (rng, xmin, xmax)
                # the first sample, or a minute before the end when there is less than that
                assert abs(xmin - min(first, xmax - 60)) <= 30, (rng, xmin, first, xmax)
                said = float(page.get_by_test_id("history-fit").get_attribute("data-first") or 0)
                assert abs(said - first) <= 30, (rng, said, first)  # "Data since <first>"

            eventually(starts_at_first, what=f"{rng} chart fitted to the data")
        page.wait_for_timeout(200)
        shot(page, "ops-gpu-detail-fitted")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_gpu_search_finds_jobs_by_id_and_name(browser: Browser, ops: Ops) -> None:
    job = ops.submit("llama-finetune-e2e", nodelist=("node2",), gres="gpu:1")
    ops.serve.wait(lambda: any(str(job) in [j["job_id"] for j in g["jobs"]]
                               for g in ops.get("/api/v1/gpus")), what="the job on a GPU")
    on = sorted(f"{g['node']}/{g['index']}" for g in ops.get("/api/v1/gpus")
                if str(job) in [j["job_id"] for j in g["jobs"]])
    ctx, page = signed_in(browser, ops, ops.viewer)
    try:
        page.goto("/gpus")
        expect(page.locator("[data-card]")).to_have_count(6)

        def shown() -> list[str]:
            return sorted(page.locator("[data-card]").evaluate_all(
                "els => els.map(e => e.dataset.testid.replace('gpu-card-', ''))"))

        for q in (f"job {job}", str(job), "finetune-e2e"):
            page.get_by_test_id("filter-q").fill(q)
            expect(page).to_have_url(re.compile(r"q="))

            def found(q: str = q) -> None:
                assert shown() == on, (q, shown(), on)

            eventually(found, what=f"search {q!r}")
        page.get_by_test_id("filter-q").fill("no-such-thing")
        expect(page.get_by_test_id("gpus-empty")).to_be_visible()
        page.get_by_test_id("filter-q").fill("")
        expect(page.locator("[data-card]")).to_have_count(6)
        page.wait_for_timeout(300)
        shot(page, "ops-gpus")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
        ops.slurm("scancel", str(job))


def test_desktop_screenshots(browser: Browser, ops: Ops) -> None:
    """The pages an operator acts from, at desktop width (tests/e2e/output/ops-desktop-*)."""
    job = ops.submit("screenshot-job", nodelist=("node2",), gres="gpu:1")
    ctx, page = signed_in(browser, ops, ops.operator)
    try:
        for path, ready, name in (("/slurm", f"job-row-{job}", "slurm"),
                                  ("/nodes", "node-row-node3", "nodes"),
                                  ("/alerts", "alerts-list", "alerts"),
                                  ("/gpus", "gpu-grid", "gpus")):
            page.goto(path)
            expect(page.get_by_test_id(ready)).to_be_visible()
            no_horizontal_overflow(page)
            page.wait_for_timeout(300)
            shot(page, f"ops-desktop-{name}")
        page.goto("/slurm")
        page.get_by_test_id(f"job-actions-{job}").click()
        expect(page.get_by_test_id(f"job-cancel-{job}")).to_be_visible()
        shot(page, "ops-desktop-menu", full=False)
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()
        ops.slurm("scancel", str(job))
