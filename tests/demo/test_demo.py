"""`gpuwarden demo --headless --duration 90` as a user runs it, one run shared by this
module's tests in order: its API shows the local cluster, jobs of several users across
nodes, example questions that name its own jobs and nodes, alerts that fire and resolve; a
second demo on the same home refuses, one with its own home and port runs beside it (and
SIGTERM stops that one cleanly); the first ends by itself and leaves nothing running.

Every other way a demo ends stops everything it started: Ctrl-C sent to the whole process
group of a demo whose stdout is a pipe, SIGHUP, and the reader of its stdout going away.
Each of those runs is small (2 nodes x 2 GPUs), beside the first one (while its alerts come
and go: the module lasts the first demo's 90 s, not that plus these), and is stopped while
a Slurm job of another user is running, so the job's processes are part of what must go."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.demo import run as demo_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the demo's Slurm cluster needs root")]
DURATION = 90
NO_LLM = "No LLM is configured"


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


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run = demo_run.start(tmp_path_factory.mktemp("demo") / "gwhome", free_port(),
                         "--duration", str(DURATION))
    try:
        yield run.started()
    finally:
        run.kill()


@pytest.fixture(scope="module")
def api(demo):
    with demo.api() as client:
        yield client


def jobs(api, state=None):
    """Slurm's queue through the API ([] until the controller's first scrape lands)."""
    r = api.get("/slurm/jobs")
    return [j for j in r.json() if state in (None, j["state"])] if r.is_success else []


def until(demo, api, what, check, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        demo.read(1.0)
    queue = [(j["job_id"], j["name"], j["user"], j["state"], j["reason"]) for j in jobs(api)]
    raise AssertionError(f"timed out: {what}; jobs {queue}\n{demo.log()}")


@pytest.mark.timeout(120)
def test_the_cluster_is_up_and_jobs_run_as_several_users(demo, api):
    overview = until(demo, api, "3 nodes x 4 GPUs up", lambda: (
        lambda o: o if o["nodes"]["up"] == 3 and o["gpus"]["total"] == 12 else None)(
        api.get("/overview").json()))
    assert overview["cost_per_hour"] > 0
    assert "jobs run as alice, bob, carol" in demo.out
    out = subprocess.run(["squeue", "--noheader", "--format=%u"], env=demo.slurm_env,
                         capture_output=True, text=True, check=True).stdout
    assert {"alice", "bob", "carol"} <= set(out.split()), out
    until(demo, api, "running jobs of two users",
          lambda: len({j["user"] for j in jobs(api, "RUNNING")}) >= 2)


@pytest.mark.timeout(120)
def test_every_example_question_gets_a_real_answer(demo, api):
    live = until(demo, api, "examples naming a pending job, a running job, a node, a user",
                 lambda: (lambda ex: ex if re.search(r"why is job \d+ pending", " ".join(ex))
                          and re.search(r"how efficient is (alice|bob|carol)'s job \d+",
                                        " ".join(ex))
                          and "demo-node" in " ".join(ex) else None)(
                     api.get("/agent").json()["examples"]))
    for question in live:
        run = api.post("/agent/runs", json={"prompt": question})
        assert run.status_code == 200, run.text
        answer = run.json()["answer"]
        assert run.json()["status"] == "done" and answer, (question, run.json())
        assert not answer.startswith(NO_LLM), (question, answer)
        assert not answer.startswith("I could not answer"), (question, answer)


@pytest.mark.timeout(60)
def test_a_second_demo_on_the_same_home_refuses(demo, api):
    second = subprocess.run(
        [sys.executable, "-m", "gpuwarden", "demo", "--headless", "--port", str(free_port())],
        env={**os.environ, "GPUWARDEN_HOME": str(demo.home)}, capture_output=True, text=True,
        timeout=45)
    assert second.returncode != 0, second.stdout + second.stderr
    message = second.stderr
    assert "a demo is already running" in message and demo.url in message, message
    assert "--port" in message and "GPUWARDEN_HOME=" in message, message
    assert "Traceback" not in message
    # the first one is unaffected
    assert demo.proc.poll() is None
    assert (demo.home / "demo" / "control-plane.json").exists()
    assert api.get("/overview").json()["nodes"]["up"] == 3


@pytest.mark.timeout(150)
def test_a_demo_beside_it_runs_and_sigterm_stops_it_cleanly(demo, api, tmp_path):
    beside = demo_run.start(tmp_path / "gwhome2", free_port(), "--nodes", "1",
                            "--gpus-per-node", "1")
    try:
        beside.started()
        with beside.api() as api2:
            until(beside, api2, "the second demo's Slurm job running",
                  lambda: jobs(api2, "RUNNING"))
        assert demo_run.job_processes(beside.home)
        beside.proc.send_signal(signal.SIGTERM)
        assert beside.finish(timeout=60) == 0, beside.log()
        assert "stopped; nothing is left running" in beside.out
        demo_run.assert_nothing_left(beside)
    finally:
        beside.kill()
    # its Slurm cluster and the first one's did not collide
    nodes = api.get("/slurm/nodes").json()
    assert len(nodes) == 3 and all("down" not in n["state"].lower() for n in nodes), nodes


def _stop_by(how: str, run: demo_run.DemoRun) -> None:
    if how == "ctrl-c to the process group":
        os.killpg(run.proc.pid, signal.SIGINT)
    elif how == "sighup":
        run.proc.send_signal(signal.SIGHUP)
    else:
        run.close_stdout()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how", ["ctrl-c to the process group", "sighup", "closed stdout"])
def test_the_demo_stops_everything_it_started(tmp_path, how):
    run = demo_run.start(tmp_path / "gwhome", free_port(), "--nodes", "2",
                         "--gpus-per-node", "2")
    try:
        run.started()
        run.wait_for(r"job \d+ llm-pretrain submitted as alice")
        deadline = time.monotonic() + 30
        while not demo_run.job_processes(run.home) and time.monotonic() < deadline:
            run.read(0.2)
        assert demo_run.job_processes(run.home), "no job process to stop\n" + run.log()
        _stop_by(how, run)
        code = run.finish(timeout=60)
        if how != "closed stdout":  # nobody reads its last words then
            assert "stopped; nothing is left running" in run.out, run.log()
            assert code == 0, run.log()
            # quiet: one line per step, none per job process
            assert "orphan" not in run.out and "leftover" not in run.out, run.out
        assert "Traceback" not in run.stderr.read_text(), run.log()
        demo_run.assert_nothing_left(run)
    finally:
        run.kill()


@pytest.mark.timeout(DURATION + 60)
def test_jobs_across_nodes_and_alerts_that_fire_and_resolve(demo, api):
    across = until(demo, api, "a job running across nodes", lambda: [
        j for j in jobs(api, "RUNNING") if len(j["gpu_detail"]) >= 2])
    assert across[0]["name"] == "llm-pretrain"
    until(demo, api, "an alert firing", lambda: api.get("/alerts?state=firing").json())
    resolved = until(demo, api, "an alert resolved",
                     lambda: api.get("/alerts?state=resolved").json(), timeout=DURATION)
    assert resolved[0]["resolved_at"] > resolved[0]["fired_at"]
    assert api.get("/me").json()["role"] == "operator"
    if CHROMIUM.exists() and (DIST / "index.html").is_file():
        overview_in_browser(demo.url, demo.token, api)


@pytest.mark.timeout(DURATION + 60)
def test_the_demo_ends_by_itself_and_leaves_nothing(demo):
    assert demo.finish(timeout=DURATION + 45) == 0, demo.log()
    assert f"stopping the demo (--duration {DURATION})" in demo.out
    assert "stopped; nothing is left running" in demo.out
    assert "orphan" not in demo.out and "leftover" not in demo.out, demo.out
    demo_run.assert_nothing_left(demo)
