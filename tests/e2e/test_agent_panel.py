"""The ops agent's panel (/agent) in a browser, against a real ``gpuwarden serve`` whose agent
talks to the loopback OpenAI-compatible server replaying a transcript: the model proposes
silencing node1's alerts; a viewer sees the proposal and cannot decide it; an operator's Deny
leaves no silence; an operator's Approve creates exactly the silence that was shown, under the
operator's name, and the card ends "executed".  Screenshot: tests/e2e/output/agent-panel.png."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.agent.fake_openai import FakeOpenAI
from tests.conftest import Daemon, Serve, start_daemon, start_serve, stop
from tests.e2e.conftest import DIST, _admin_token, shot
from tests.e2e.conftest import signed_in as signed_in_at

pytestmark = pytest.mark.slow

ARGS = {"subject": "node1/*", "duration": "1h", "comment": "maintenance"}
TRANSCRIPT = [
    {"tool_calls": [{"name": "silence_alert", "arguments": json.dumps(ARGS)}]},
    {"content_from_tool": True},
]
PROMPT = "silence the alerts on node1 for an hour, we are doing maintenance"
DESCRIPTION = "silence alerts * on node1/* for 1h"


@dataclass
class AgentCluster:
    serve: Serve
    fake: FakeOpenAI
    operator: str
    viewer: str

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.serve.url + path, timeout=10,
                             headers={"Authorization": f"Bearer {self.serve.admin}"}, **kw)

    def silences(self) -> list[dict]:
        r = self.api("GET", "/api/v1/silences")
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def node1() -> Iterator[Daemon]:
    if not (DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({DIST}/index.html missing): run "
                    "`cd web && npm ci && npm run build`", pytrace=False)
    daemon = start_daemon(["--gpu-backend", "sim", "--no-auth", "--interval", "1",
                           "--sim-gpus", "2", "--sim-profile", "0=idle,1=train",
                           "--hostname", "node1"])
    yield daemon
    stop(daemon.proc)


def _config(node1: Daemon, cluster: str) -> str:
    return (f"cluster: {cluster}\n"
            "scrape: {interval: 1, timeout: 1}\n"
            "nodes:\n"
            f"  - {{name: node1, url: '{node1.url}', cost_per_hour: 8.0}}\n")


def _up(serve: Serve) -> None:
    serve.wait(lambda: serve.get("/api/v1/overview").json()["nodes"]["up"] == 1,
               what="node1 scraped")


@pytest.fixture(scope="module")
def agent_cluster(node1: Daemon, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[AgentCluster]:
    tmp = tmp_path_factory.mktemp("agent-e2e")
    key = tmp / "openai.key"
    key.write_text("sk-e2e-key\n")
    with FakeOpenAI(TRANSCRIPT, key="sk-e2e-key") as fake:
        config = tmp / "gpuwarden.yaml"
        config.write_text(
            _config(node1, "agent-e2e") +
            "agent:\n"
            "  provider: openai\n"
            "  model: gpt-4.1-mini\n"
            f"  base_url: '{fake.url}'\n"
            f"  api_key_file: '{key}'\n"
        )
        serve = _admin_token(start_serve(config, tmp / "home"))
        try:
            c = AgentCluster(serve, fake, "", "")

            def token(role: str, name: str) -> str:
                r = c.api("POST", "/api/v1/tokens", json={"role": role, "name": name})
                r.raise_for_status()
                return r.json()["token"]

            c.operator, c.viewer = token("operator", "olivia"), token("viewer", "vic")
            _up(serve)
            yield c
        finally:
            stop(serve.proc, signal.SIGKILL)


@pytest.fixture(scope="module")
def plain(node1: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """The same node behind a serve with no agent section: no model."""
    tmp = tmp_path_factory.mktemp("agent-e2e-plain")
    (tmp / "gpuwarden.yaml").write_text(_config(node1, "plain"))
    serve = _admin_token(start_serve(tmp / "gpuwarden.yaml", tmp / "home"))
    try:
        _up(serve)
        yield serve
    finally:
        stop(serve.proc, signal.SIGKILL)


def signed_in(browser: Browser, serve: Serve, token: str) -> tuple[BrowserContext, Page]:
    return signed_in_at(browser, serve.url, token)


def ask(page: Page) -> str:
    """Ask for the silence from the Ask page; the run's id once its proposal is shown."""
    page.get_by_role("link", name="Ask").first.click()
    page.wait_for_url(re.compile(r"/agent$"))
    expect(page.get_by_test_id("agent-model")).to_have_attribute("data-llm", "yes")
    expect(page.get_by_test_id("agent-model")).to_contain_text("gpt-4.1-mini")
    page.get_by_test_id("agent-prompt").fill(PROMPT)
    page.get_by_test_id("agent-send").click()
    turn = page.get_by_test_id("agent-turn").last
    expect(turn.get_by_test_id("agent-question")).to_have_text(PROMPT)
    expect(turn).to_have_attribute("data-status", "awaiting_approval")
    card = turn.get_by_test_id("agent-call")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-state", "proposed")
    expect(card.get_by_test_id("agent-call-description")).to_have_text(DESCRIPTION)
    shown = card.get_by_test_id("agent-call-args").inner_text()
    tool, _, args = shown.partition(" ")
    assert tool == "silence_alert" and json.loads(args) == {**ARGS, "rule": None}
    run_id = turn.get_attribute("data-run")
    assert run_id and re.fullmatch(r"[0-9a-f]{12}", run_id)
    return run_id


def test_a_viewer_sees_the_proposal_and_an_operators_deny_silences_nothing(
        browser: Browser, agent_cluster: AgentCluster) -> None:
    c = agent_cluster
    vctx, viewer = signed_in(browser, c.serve, c.viewer)
    octx, operator = signed_in(browser, c.serve, c.operator)
    try:
        run_id = ask(viewer)
        card = viewer.get_by_test_id("agent-call")
        expect(card.get_by_test_id("agent-approve")).to_be_disabled()
        expect(card.get_by_test_id("agent-deny")).to_be_disabled()
        expect(card.get_by_test_id("agent-needs-operator")).to_have_text(
            "an operator must approve")
        # the API agrees: a viewer's decision is refused
        r = httpx.post(f"{c.serve.url}/api/v1/agent/runs/{run_id}/decisions",
                       headers={"Authorization": f"Bearer {c.viewer}"}, timeout=10,
                       json={"decisions": [{"call_id": card.get_attribute("data-call-id"),
                                            "approve": False}]})
        assert r.status_code == 403
        shot(viewer, "agent-panel-viewer")

        # the operator opens the viewer's run from the list and denies it
        operator.goto("/agent")
        recent = operator.get_by_test_id(f"agent-recent-{run_id}")
        expect(recent).to_have_attribute("data-status", "awaiting_approval")
        recent.click()
        turn = operator.locator(f"[data-testid=agent-turn][data-run='{run_id}']")
        ocard = turn.get_by_test_id("agent-call")
        expect(ocard).to_have_attribute("data-state", "proposed")
        ocard.get_by_test_id("agent-comment").fill("not now")
        ocard.get_by_test_id("agent-deny").click()
        expect(turn).to_have_attribute("data-status", "done")
        expect(ocard).to_have_attribute("data-state", "denied")
        expect(ocard.get_by_test_id("agent-call-decided")).to_have_text(
            "denied by olivia (operator)")
        expect(turn.get_by_test_id("agent-answer").last).to_contain_text("From the tools:")
        expect(turn.get_by_test_id("agent-usage")).to_contain_text("cost unknown")
        assert c.silences() == []
        run = c.api("GET", f"/api/v1/agent/runs/{run_id}").json()
        assert [call["state"] for call in run["calls"]] == ["denied"]
        assert not viewer.errors and not operator.errors  # type: ignore[attr-defined]
    finally:
        vctx.close()
        octx.close()


def test_an_operator_approves_and_exactly_that_silence_is_made(
        browser: Browser, agent_cluster: AgentCluster) -> None:
    c = agent_cluster
    assert c.silences() == []
    ctx, page = signed_in(browser, c.serve, c.operator)
    try:
        run_id = ask(page)
        turn = page.locator(f"[data-testid=agent-turn][data-run='{run_id}']")
        card = turn.get_by_test_id("agent-call")
        expect(card.get_by_test_id("agent-approve")).to_be_enabled()
        card.get_by_test_id("agent-approve").click()
        expect(card).to_have_attribute("data-state", "executed")
        expect(turn).to_have_attribute("data-status", "done")
        expect(card.get_by_test_id("agent-call-state")).to_have_text("executed")
        expect(card.get_by_test_id("agent-call-decided")).to_have_text(
            "approved by olivia (operator)")
        expect(card.get_by_test_id("agent-call-result")).to_contain_text(
            "subject node1/* for 1h")
        # the resumed run's answer streamed into the same turn, after the card
        expect(turn.get_by_test_id("agent-answer").last).to_contain_text("From the tools:")
        usage = turn.get_by_test_id("agent-usage")
        expect(usage).to_contain_text(re.compile(r"2 model requests · [\d,]+ input \+ [\d,]+ "
                                                 r"output tokens · cost unknown"))

        silences = c.silences()
        assert len(silences) == 1, silences
        s = silences[0]
        assert (s["rule"], s["subject"], s["comment"], s["author"]) == (
            None, "node1/*", "maintenance", "olivia (operator)")
        assert 3500 <= s["expires_at"] - s["created_at"] <= 3700
        run = c.api("GET", f"/api/v1/agent/runs/{run_id}").json()
        assert run["status"] == "done"
        assert [(x["state"], x["decided_by"]) for x in run["calls"]] == [
            ("executed", "olivia (operator)")]
        assert str(s["id"]) in run["calls"][0]["result"]
        page.mouse.move(0, 0)
        shot(page, "agent-panel")
        assert not page.errors  # type: ignore[attr-defined]
    finally:
        ctx.close()


def test_without_a_model_the_analyzers_answer_and_text_stays_text(
        browser: Browser, plain: Serve) -> None:
    """With no agent.model the panel says so, offers the analyzers' example questions, and
    what a user typed (markup included) is shown as typed, never as HTML."""
    ctx, page = signed_in(browser, plain, plain.admin)
    try:
        _analyzers(page, plain)
    finally:
        ctx.close()


def _analyzers(page: Page, plain: Serve) -> None:
    page.get_by_role("link", name="Ask").first.click()
    expect(page.get_by_test_id("agent-model")).to_have_attribute("data-llm", "no")
    expect(page.get_by_test_id("agent-no-llm")).to_contain_text("answers come from the analyzers")
    examples = page.get_by_test_id("agent-examples").get_by_role("button")
    offered = plain.get("/api/v1/agent").json()["examples"]
    assert len(offered) >= 5  # pending, failed, waste, node, efficiency, overview
    expect(examples).to_have_count(len(offered))
    for question in offered:  # the page shows the control plane's list, not a copy
        expect(examples.filter(has_text=question)).to_have_count(1)
    examples.filter(has_text="how is the cluster doing?").click()
    box = page.get_by_test_id("agent-prompt")
    expect(box).to_have_value("how is the cluster doing?")
    typed = '<b id="bold">how is the cluster doing?</b><img src=x onerror="window.__xss=1">'
    box.fill(typed)
    box.press("Enter")
    turn = page.get_by_test_id("agent-turn").last
    expect(turn).to_have_attribute("data-status", "done")
    expect(turn.get_by_test_id("agent-question")).to_have_text(typed)
    answer = turn.get_by_test_id("agent-answer")
    expect(answer).to_have_count(1)
    expect(answer).to_contain_text("Cluster plain: 2 GPUs")
    assert "\n- Nodes: 1 up" in answer.inner_text()  # newlines kept
    expect(turn.get_by_test_id("agent-usage")).to_have_text(
        "answered by the analyzers · no model tokens")
    assert page.locator("#bold").count() == 0 and page.locator("img[src=x]").count() == 0
    assert page.evaluate("() => window.__xss") is None
    run = plain.get(f"/api/v1/agent/runs/{turn.get_attribute('data-run')}").json()
    assert run["mode"] == "analyzers" and run["prompt"] == typed
    expect(answer).to_have_text(run["answer"])
    shot(page, "agent-panel-analyzers")
    assert not page.errors  # type: ignore[attr-defined]
