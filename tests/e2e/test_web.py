"""The web UI against a real control plane: numbers equal the API's, cards follow GPU state,
navigation, filters, the live stream's banner, and a screenshot of every page
(tests/e2e/output/)."""

from __future__ import annotations

import re
import signal

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import stop
from tests.e2e.conftest import Cluster, eventually, shot

pytestmark = pytest.mark.slow


def _num(page: Page, testid: str) -> float | None:
    raw = page.get_by_test_id(testid).get_attribute("data-value")
    return None if raw in (None, "") else float(raw)


def test_sign_in_with_a_pasted_token(context, cluster: Cluster) -> None:
    page = context.new_page()
    page.goto("/gpus?state=busy")
    page.wait_for_url(re.compile(r"/signin\?next="))
    expect(page.get_by_test_id("signin-form")).to_be_visible()
    shot(page, "01-signin")
    page.get_by_test_id("signin-token").fill("gw_not_a_real_token")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_contain_text("unknown or revoked")
    page.get_by_test_id("signin-token").fill(cluster.serve.admin)
    page.get_by_test_id("signin-submit").click()
    page.wait_for_url(re.compile(r"/gpus\?state=busy$"))  # back where the user was going
    expect(page.get_by_test_id("role")).to_have_text("admin")
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["gpuwarden_session"]["httpOnly"] is True
    # and signing out ends the session
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/signin"))
    page.goto("/")
    page.wait_for_url(re.compile(r"/signin"))
    expect(page.get_by_test_id("signin-form")).to_be_visible()


def test_overview_equals_the_api(page: Page, cluster: Cluster) -> None:
    expect(page.get_by_test_id("ov-gpus-total")).to_be_visible()

    def same() -> None:
        o = cluster.api("/api/v1/overview")
        assert _num(page, "ov-nodes-up") == o["nodes"]["up"] == 2
        assert _num(page, "ov-nodes-down") == o["nodes"]["down"] == 1
        assert _num(page, "ov-gpus-total") == o["gpus"]["total"] == 5
        for state in ("busy", "idle", "allocated_idle", "down"):
            assert _num(page, f"ov-gpus-{state}") == o["gpus"][state], state
        assert _num(page, "ov-util-mean") == pytest.approx(o["utilization_mean"])
        assert _num(page, "ov-power-w") == pytest.approx(o["power_w"])
        assert _num(page, "ov-cost-hr") == pytest.approx(o["cost_per_hour"])
        assert _num(page, "ov-waste-hr") == pytest.approx(o["waste_per_hour"])
        assert o["waste_today"] is not None  # the idle GPU has cost money since it started
        assert _num(page, "ov-waste-today") == pytest.approx(o["waste_today"])
        assert _num(page, "ov-alerts-count") == o["alerts_active"]
        assert _num(page, "ov-burn-in") == o["checks"]["burn_in"]
        assert _num(page, "ov-checks-failing") == o["checks"]["failing"]
        mem = o["memory_used_mib"] / o["memory_total_mib"]
        assert _num(page, "ov-mem-pct") == pytest.approx(mem)
        # what is shown is the same figure, formatted
        util = page.get_by_test_id("ov-util-mean").inner_text()
        assert abs(int(util.rstrip("%")) - o["utilization_mean"]) <= 0.5 + 1e-9
        assert page.get_by_test_id("ov-cost-hr").inner_text() == f"${o['cost_per_hour']:,.2f}/hr"
        assert page.get_by_test_id("ov-waste-hr").inner_text() == f"${o['waste_per_hour']:,.2f}/hr"

    eventually(same, what="overview equal to the API")
    o = cluster.api("/api/v1/overview")
    assert o["slurm"] is None
    expect(page.get_by_test_id("ov-slurm")).to_contain_text("Slurm not configured")
    expect(page.get_by_test_id("cluster-name")).to_have_text("e2e")
    shot(page, "02-overview")
    assert not page.errors  # type: ignore[attr-defined]


def test_gpu_cards_follow_the_api(page: Page, cluster: Cluster) -> None:
    page.goto("/gpus")
    expect(page.get_by_test_id("gpu-grid")).to_be_visible()

    def same() -> None:
        gpus = cluster.api("/api/v1/gpus")
        assert len(gpus) == 5
        for g in gpus:
            card = page.get_by_test_id(f"gpu-card-{g['node']}/{g['index']}")
            assert card.get_attribute("data-state") == g["state"], (g["node"], g["index"])
            if g["utilization"] is not None:
                shown = float(card.get_attribute("data-util"))
                assert shown == pytest.approx(g["utilization"]), (g["node"], g["index"])

    eventually(same, what="cards equal to the API")
    # the idle GPU and the training one side by side
    idle = page.get_by_test_id("gpu-card-node1/0")
    train = page.get_by_test_id("gpu-card-node1/1")
    expect(idle).to_have_attribute("data-state", "idle")
    expect(idle).to_contain_text("Idle")
    expect(idle.get_by_test_id("card-util")).to_have_text("0%")
    expect(train).to_have_attribute("data-state", "busy")
    expect(train).to_contain_text("Busy")
    expect(page.get_by_test_id("gpu-card-node2/2")).to_have_attribute("data-state", "down")
    expect(page.get_by_test_id("gpu-card-node2/1").get_by_test_id("card-flags")).to_contain_text("thermal")
    # the down node that never reported GPUs is still listed
    expect(page.get_by_test_id("node-group-node3")).to_contain_text("down")

    # a live update changes a card without a reload: utilization of the training GPU moves
    before = train.get_attribute("data-util")
    page.evaluate("() => { window.__noReload = 1; }")
    expect(train).not_to_have_attribute("data-util", before or "", timeout=10_000)
    assert page.evaluate("() => window.__noReload") == 1
    shot(page, "03-gpus")


def test_filters_navigation_and_keyboard(page: Page, cluster: Cluster) -> None:
    gpus = cluster.api("/api/v1/gpus")
    page.goto("/gpus")
    cards = page.locator("[data-card]")
    expect(cards).to_have_count(5)

    page.get_by_test_id("filter-state-idle").click()
    expect(page).to_have_url(re.compile(r"state=idle"))
    idle = [g for g in gpus if g["state"] == "idle"]
    expect(cards).to_have_count(len(idle))
    expect(page.get_by_test_id("gpu-card-node1/0")).to_be_visible()
    page.get_by_test_id("filter-state-idle").click()  # toggles off
    expect(cards).to_have_count(5)

    # the node menu (Radix select), then a shared URL restores the same view
    page.get_by_test_id("filter-node").click()
    page.get_by_role("option", name="node2").click()
    expect(page).to_have_url(re.compile(r"node=node2"))
    expect(cards).to_have_count(3)
    page.goto("/gpus?node=node2&state=busy")
    expect(cards).to_have_count(len([g for g in gpus if g["node"] == "node2"
                                     and g["state"] == "busy"]))
    page.get_by_test_id("filter-clear").click()
    expect(cards).to_have_count(5)

    # "/" focuses the search box; the text filter is in the URL too
    page.keyboard.press("/")
    page.keyboard.type("node1/1")
    expect(page).to_have_url(re.compile(r"q=node1%2F1|q=node1/1"))
    expect(cards).to_have_count(1)
    # arrow keys walk the cards, Enter opens one
    page.goto("/gpus?node=node1")
    page.locator("[data-card='0']").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("[data-card='1']")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url("**/gpus/node1/1")
    expect(page.get_by_test_id("gpu-title")).to_have_text("node1 / GPU 1")
    expect(page.locator("[data-testid^=chart-] canvas")).to_have_count(6)
    page.get_by_role("button", name="6h").click()
    expect(page).to_have_url(re.compile(r"range=6h"))
    expect(page.get_by_test_id("gpu-job")).to_contain_text("No job")
    page.wait_for_timeout(500)
    shot(page, "04-gpu-detail")

    # g-shortcuts and the sidebar
    page.keyboard.press("g")
    page.keyboard.press("n")
    page.wait_for_url("**/nodes")
    expect(page.get_by_test_id("nodes-table").locator("tbody tr")).to_have_count(3)
    expect(page.get_by_test_id("node-row-node3")).to_contain_text("down")
    shot(page, "05-nodes")
    page.get_by_test_id("node-row-node2").get_by_role("link", name="node2").click()
    page.wait_for_url("**/nodes/node2")
    expect(page.locator("[data-card]")).to_have_count(3)
    shot(page, "06-node-detail")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Slurm").click()
    expect(page.get_by_test_id("slurm-not-configured")).to_be_visible()
    shot(page, "07-slurm")
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name=re.compile("^Alerts")).click()

    def same_alerts() -> None:
        firing = cluster.api("/api/v1/alerts?state=firing")
        if firing:
            ids = page.locator("[data-testid=alerts-list] > li").evaluate_all(
                "els => els.map(e => e.dataset.testid)")
            assert sorted(ids) == sorted(f"alert-{a['id']}" for a in firing)
        else:
            assert page.get_by_test_id("alerts-empty").is_visible()

    eventually(same_alerts, what="alerts equal to the API's firing alerts")
    page.wait_for_timeout(200)
    shot(page, "08-alerts")

    # dark theme ("t"), remembered across reloads
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    expect(page.get_by_test_id("ov-gpus-total")).to_be_visible()
    page.keyboard.press("t")
    expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
    page.reload()
    expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
    expect(page.get_by_test_id("ov-gpus-total")).to_be_visible()
    shot(page, "09-overview-dark")
    page.goto("/gpus")
    expect(cards).to_have_count(5)
    shot(page, "10-gpus-dark")
    page.goto("/gpus/node2/1")
    expect(page.locator("[data-testid^=chart-] canvas")).to_have_count(6)
    page.wait_for_timeout(300)
    shot(page, "11-gpu-detail-dark")
    assert not page.errors  # type: ignore[attr-defined]


def test_stream_drop_and_recovery_banner(page: Page, cluster: Cluster) -> None:
    page.goto("/")
    expect(page.get_by_test_id("live-pill")).to_have_attribute("data-stream", "live")
    stop(cluster.serve.proc, signal.SIGKILL)
    banner = page.get_by_test_id("stream-banner")
    expect(banner).to_have_attribute("data-stream", "down", timeout=10_000)
    expect(banner).to_contain_text("Live updates lost")
    shot(page, "12-stream-down", full=False)
    cluster.restart_serve()  # same port, same state: the session cookie stays valid
    expect(banner).to_have_attribute("data-stream", "recovered", timeout=20_000)
    expect(banner).to_contain_text("restored")
    shot(page, "13-stream-recovered", full=False)
    expect(page.get_by_test_id("live-pill")).to_have_attribute("data-stream", "live",
                                                               timeout=10_000)
