"""The deterministic analyzers against the live cluster: each answer checked against what
Slurm and the node daemons say, not against hard-coded text."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from types import SimpleNamespace

import httpx
import pytest

from gpuwarden.agent import analyzers, router
from gpuwarden.services import live as live_view
from gpuwarden.services import slurm
from tests.agent.live import PRICE, _wait, node
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_pending_for_resources_names_the_nodes_and_jobs_that_block_it(live):
    cp = live.cp
    big = live.jobs["big-sweep"]
    a = analyzers.explain_pending(cp, big)
    assert a.data["reason"] == "Resources"
    assert a.data["gpus_per_node"] == 2 and a.data["nodes_wanted"] == 2
    # what Slurm says: only the nodes with 2 free GPUs fit; node4 is the one
    free = {n.name for n in slurm.nodes(cp) if n.gpus_idle >= 2}
    assert set(a.data["nodes_fitting_now"]) == free == {node(4)}
    assert "1 node(s) have that now" in a.summary and node(4) in a.summary
    # the blockers are the running jobs on the busy nodes, named with their owners
    for key in ("llm-train", "forgotten-notebook", "injection", "hot-finetune"):
        assert str(live.jobs[key]) in a.summary
    rows = {r["node"]: r for r in a.data["nodes"]}
    assert rows[node(1)]["held_by"][0]["job_id"] == live.jobs["llm-train"]
    assert rows[node(1)]["held_by"][0]["gpus"] == 2
    assert rows[node(5)]["state"] == "drained" or "DRAIN" in rows[node(5)]["flags"]
    assert any("fan failure" in f and node(5) in f for f in a.facts)


def test_held_and_running_and_unknown_jobs(live):
    held = analyzers.explain_pending(live.cp, live.jobs["later-eval"])
    assert held.data["reason"].startswith("JobHeld")
    assert any(f"scontrol release {live.jobs['later-eval']}" in f for f in held.facts)
    running = analyzers.explain_pending(live.cp, live.jobs["llm-train"])
    assert "not pending: it is RUNNING" in running.summary and node(1) in running.summary
    gone = analyzers.explain_pending(live.cp, 999_999)
    accounting = slurm.summary(live.cp).accounting
    assert gone.data["found"] is False and gone.data["accounting"] is accounting
    assert ("nor in its accounting records" in gone.summary) is accounting
    assert "not in Slurm's queue" in gone.summary
    with pytest.raises(subprocess.CalledProcessError):  # Slurm does not know it either
        live.squeue(999_999, "%T")


def test_waste_report_matches_the_gpu_states_and_prices(live):
    cp = live.cp
    a = analyzers.waste_report(cp)
    gpus = live_view.list_gpus(cp)
    idle = [g for g in gpus if g.state == "idle"]
    alloc_idle = [g for g in gpus if g.state == "allocated_idle"]
    assert a.data["idle"] == len(idle) and a.data["allocated_idle"] == len(alloc_idle)
    assert {(g.node, g.index) for g in idle} >= {(node(4), 0), (node(4), 1)}
    assert a.data["waste_per_hour"] == pytest.approx(PRICE * (len(idle) + len(alloc_idle)))
    notebook = str(live.jobs["forgotten-notebook"])
    assert any(notebook in f and "user root" in f for f in a.facts)
    assert f"${PRICE * (len(idle) + len(alloc_idle)):,.2f}/hr" in a.summary


def test_node_doctor_finds_each_fault(live):
    cp = live.cp
    hot = analyzers.node_doctor(cp, node(3))
    assert any("thermal throttling" in p for p in hot.data["problems"])
    assert any("application XIDs" in p for p in hot.data["problems"])
    assert any("XID" in f and ("application" in f or "hardware" in f) for f in hot.facts)
    dead = analyzers.node_doctor(cp, node(5))
    assert not dead.data["up"] and "does not answer" in dead.summary
    assert dead.data["slurm"]["reason"] == "fan failure"
    assert any("Slurm" in p for p in dead.data["problems"])
    fine = analyzers.node_doctor(cp, node(4))
    assert fine.data["problems"] == [] and "looks healthy" in fine.summary


def test_node_doctor_names_failed_checks_first_with_figure_and_expected(live):
    from gpuwarden.checks import CheckResult
    from gpuwarden.services import checks

    cp, name = live.cp, node(4)  # healthy: nothing but the checks to say
    book = checks.store(cp)
    bad = CheckResult("pcie_link", "quick", "fail", "GPU 0: x8 of x16, gen 3 of gen 5",
                      "x16 gen 5")
    warn = CheckResult("power_limit", "quick", "warn", "GPU 1: 500 W of default 700 W",
                       "the default limit")
    book.record(name, "quick", "on-demand", [bad, warn])
    try:
        a = analyzers.node_doctor(cp, name)
        assert a.data["problems"] == ["check pcie_link failed: GPU 0: x8 of x16, gen 3 of "
                                      "gen 5 (expected x16 gen 5)"], a.data["problems"]
        assert a.facts[0].startswith("Health check pcie_link failed (")
        assert a.facts[0].endswith("GPU 0: x8 of x16, gen 3 of gen 5; expected x16 gen 5.")
        assert any(f.startswith("Health check power_limit warns") for f in a.facts)
        assert [c["name"] for c in a.data["checks"]] == ["pcie_link", "power_limit"]
    finally:  # the node passes again: the doctor says nothing of the checks
        book.record(name, "quick", "on-demand", [
            CheckResult(r, "quick", "pass", "ok", "ok") for r in ("pcie_link", "power_limit")])
    again = analyzers.node_doctor(cp, name)
    assert again.data["problems"] == [] and not again.data["checks"]
    # node3's XID 79 (the storm's): the watchdog recorded it as a failed xid_hardware check,
    # which the doctor names before the XIDs themselves
    _wait("the watchdog's failed xid_hardware check on node3", lambda: any(
        c.name == "xid_hardware" and c.verdict == "fail"
        for c in checks.node_checks(cp, node(3), history=0).last), 30)
    problems = analyzers.node_doctor(cp, node(3)).data["problems"]
    assert problems[0].startswith("check xid_hardware failed: GPU 1: XID 79 x"), problems
    assert problems[0].endswith("(expected none)")
    assert any(p.startswith("gpu1 hardware XID 79") for p in problems[1:]), problems


def test_job_efficiency_of_running_and_finished_jobs(live):
    cp = live.cp
    train = asyncio.run(analyzers.job_efficiency(cp, job_id=live.jobs["llm-train"]))
    idle = asyncio.run(analyzers.job_efficiency(cp, job_id=live.jobs["forgotten-notebook"]))
    (t,), (i,) = train.data["jobs"], idle.data["jobs"]
    assert t["gpus"] == 2 and i["gpus"] == 1
    assert t["mean_utilization"] > 50 > i["mean_utilization"]
    assert i["idle_cost"] > 0 and i["idle_cost"] == pytest.approx(i["cost"], rel=0.5)
    # quick-prep ran 6 s on node4 and ended: the stored history has its GPU use
    assert live.jobs["quick-prep"] not in {j.job_id for j in slurm.jobs(cp)
                                           if j.state in ("PENDING", "RUNNING")}
    user = asyncio.run(analyzers.job_efficiency(cp, user="root"))
    by_id = {r["job_id"]: r for r in user.data["jobs"]}
    running = {j.job_id for j in slurm.jobs(cp, user="root") if j.state == "RUNNING"
               and j.gpus_requested}  # GPU jobs: cpu-prep has no GPU use to measure
    assert running <= set(by_id) and live.jobs["cpu-prep"] not in by_id
    prep = by_id[live.jobs["quick-prep"]]
    assert prep["state"] in ("finished", "COMPLETED") and prep["gpus"] == 2
    assert prep["gpu_hours"] > 0
    assert "GPU-hours" in user.summary and f"({len(running)} running)" in user.summary
    nobody = asyncio.run(analyzers.job_efficiency(cp, user="nobody-here"))
    assert "No GPU use recorded for user nobody-here" in nobody.summary


@pytest.mark.parametrize(("question", "kind"), [
    ("why is job {big} pending?", "pending"),
    ("which GPUs are wasted and what do they cost?", "waste"),
    ("what is wrong with {n3}?", "node"),
    ("how efficient is job {train}?", "efficiency"),
])
def test_ask_without_an_llm_routes_to_the_analyzers(live, question, kind):
    q = question.format(big=live.jobs["big-sweep"], n3=node(3), train=live.jobs["llm-train"])
    text = asyncio.run(router.answer(live.cp, q))
    expected = {
        "pending": analyzers.explain_pending(live.cp, live.jobs["big-sweep"]).summary,
        "waste": "GPUs are below",
        "node": f"{node(3)}:",
        "efficiency": f"job {live.jobs['llm-train']}",
    }[kind]
    assert expected.split(":")[0] in text


@pytest.mark.parametrize(("question", "squeue_args"), [
    ("how many jobs are running?", ["-t", "RUNNING"]),
    ("which jobs are pending and why?", ["-t", "PENDING"]),
    ("show me the queue", []),
    ("what is running on {n1}?", ["-t", "RUNNING", "-w", "{n1}"]),
    ("what is {owner} running?", ["-t", "RUNNING", "-u", "{owner}"]),
    ("what is currently running?", ["-t", "RUNNING"]),  # "currently" is no user
])
def test_a_question_about_the_queue_is_answered_with_what_squeue_lists(live, question,
                                                                        squeue_args):
    """The jobs, and the count, squeue lists for the same filter; pending ones with their
    reason (the answer and squeue are read together until they agree: the answer is as old
    as gpuwarden's last Slurm poll)."""
    from gpuwarden.services import slurm

    owner = next(j.user for j in slurm.jobs(live.cp) if j.state == "RUNNING")
    fill = {"n1": node(1), "owner": owner}
    q = question.format(**fill)
    args = [a.format(**fill) for a in squeue_args]

    def agree():
        listed = sorted(int(i) for i in live.slurm("squeue", "-h", "-o", "%i", *args).split())
        result = asyncio.run(router.route(live.cp, q))
        assert isinstance(result, analyzers.Analysis) and result.kind == "jobs", result
        return (result, listed) if sorted(result.data["jobs"]) == listed else None

    result, listed = _wait(f"{q!r} to list what squeue {' '.join(args)} lists", agree)
    count = rf"\b{len(listed)} jobs?\b" if listed else r"^No job"
    assert re.search(count, result.summary), result.summary
    for job_id in listed[:analyzers.MAX_JOBS_SHOWN]:
        assert any(f"Job {job_id} " in f for f in result.facts), (job_id, result.facts)
    if "PENDING" in args:
        big = live.jobs["big-sweep"]
        reason = live.squeue(big, "%r")
        assert any(f"Job {big} " in f and reason in f for f in result.facts)
    if "-u" in args:
        assert result.data["user"] == owner
    if "-w" in args:
        assert result.data["node"] == node(1)


def test_which_jobs_failed_is_what_sacct_says(live):
    if not live.accounting:
        pytest.skip("needs Slurm accounting: apt-get install -y mariadb-server slurmdbd")
    live.wait_ended("crashes")
    result = asyncio.run(router.route(live.cp, "which jobs failed?"))
    assert isinstance(result, analyzers.Analysis) and result.kind == "jobs", result
    assert live.jobs["crashes"] in result.data["jobs"]
    for job_id in result.data["jobs"]:  # each one sacct has in a failed state
        state = live.slurm("sacct", "-X", "-n", "-j", str(job_id), "-o", "State%20").split()[0]
        assert state in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "BOOT_FAIL"), (
            job_id, state)
        assert any(f"Job {job_id} " in f and state in f for f in result.facts)
    crashed = next(f for f in result.facts if f"Job {live.jobs['crashes']} " in f)
    assert "exit code 3" in crashed  # what sacct's ExitCode 3:0 says


def test_the_queue_of_someone_with_no_job_is_empty_not_everyone_s(live):
    for q in ("what jobs does nobody-here have?", "what is nobody-here running?",
              "list the jobs of user nobody-here"):
        result = asyncio.run(router.route(live.cp, q))
        assert isinstance(result, analyzers.Analysis) and result.kind == "jobs", (q, result)
        assert result.data["user"] == "nobody-here" and result.data["jobs"] == [], q
        assert result.summary.startswith("No job of nobody-here"), result.summary
    overview = asyncio.run(router.route(live.cp, "how many GPUs are busy?"))
    assert isinstance(overview, analyzers.Analysis) and overview.kind == "overview"


def test_which_alerts_fire_is_what_the_alerts_api_lists(live):
    def agree():
        with live.api() as c:
            firing = sorted(a["id"] for a in c.get("/api/v1/alerts",
                                                    params={"state": "firing"}).json())
        result = asyncio.run(router.route(live.cp, "which alerts are firing?"))
        assert isinstance(result, analyzers.Analysis) and result.kind == "alerts", result
        return (result, firing) if sorted(result.data["firing"]) == firing else None

    result, firing = _wait("the alerts answer to match GET /api/v1/alerts", agree)
    assert firing, "the live cluster has faults: some alert fires"
    assert result.summary.startswith(f"{len(firing)} alert(s) firing")
    severities = [f.split(":", 1)[0] for f in result.facts]
    order = {"critical": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=order.__getitem__)  # the worst first


def test_drained_and_down_nodes_are_the_ones_sinfo_r_lists(live):
    def agree():
        listed = set(live.slurm("sinfo", "-R", "-h", "-N", "-o", "%N").split())
        result = asyncio.run(router.route(live.cp, "which nodes are drained?"))
        assert isinstance(result, analyzers.Analysis) and result.kind == "overview", result
        fact = next(f for f in result.facts if f.startswith("Slurm nodes down or drained"))
        named = {w for w in re.findall(r"[\w-]+", fact.split(":", 1)[1])
                 if w.startswith(node(1).rsplit("-", 1)[0] + "-node")}
        return (fact, listed) if named == listed else None

    fact, listed = _wait("the drained nodes to match sinfo -R", agree)
    assert node(5) in listed and "fan failure" in fact  # the live cluster drains node5
    cost = asyncio.run(router.route(live.cp, "how much does the cluster cost per hour?"))
    assert cost.kind == "overview" and any(f.startswith("Cost $") for f in cost.facts)


def test_ask_without_an_llm_says_what_needs_one(live):
    text = asyncio.run(router.answer(live.cp, "write me a haiku about my cluster"))
    assert "No LLM is configured" in text and "agent.model" in text
    text = asyncio.run(router.answer(live.cp, f"reboot {node(3)}"))
    assert "no tool for that" in text
    text = asyncio.run(router.answer(live.cp, f"cancel job {live.jobs['big-sweep']}"))
    assert "needs the LLM agent" in text
    assert live.jobs["big-sweep"] in live.job_states()


def test_a_gpu_that_falls_off_is_the_first_thing_the_doctor_names(live, tmp_path):
    """A node whose GPU 1 is lost (a node daemon of its own, simulating that GPU fallen off):
    the doctor leads with that GPU being down, as the node's /metrics say."""
    port = free_port()
    token = tmp_path / "token"
    token.write_text(secrets.token_urlsafe(24))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "node", "--port", str(port), "--gpu-backend", "sim",
         "--sim-gpus", "2", "--sim-profile", "0=train,1=lost", "--interval", "1",
         "--token-file", str(token), "--hostname", "spare1"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "daemon.log").open("w"))
    spare = SimpleNamespace(name="agentc-spare1", url=f"http://127.0.0.1:{port}",
                            token_file=token, role="worker", cost_per_hour=0.0)
    live.cp.inventory.upsert_provider_nodes("agentc-spare", "static", [spare])
    try:
        try:
            _wait("the spare node scraped", lambda: live_view.get_node(live.cp, spare.name).up
                  and live_view.get_node(live.cp, spare.name).gpus == 2, 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; daemon: {(tmp_path / 'daemon.log').read_text()}, "
                                 f"exit {daemon.poll()}") from None
        metrics = _metrics(live, spare.name)
        up = {int(g): float(v) for g, v in re.findall(
            r'^gpuwarden_gpu_up\{[^}]*gpu="(\d+)"[^}]*\} (\S+)$', metrics, re.M)}
        assert up == {0: 1.0, 1: 0.0}, metrics
        a = analyzers.node_doctor(live.cp, spare.name)
        assert a.data["problems"][0] == "gpu1 down", a.data["problems"]
        assert a.summary.startswith(f"{spare.name}: gpu1 down")
        assert a.facts[0].startswith("gpu1 is down") and "gpu0 down" not in a.summary
    finally:
        live.cp.inventory.remove_cluster("agentc-spare")
        daemon.terminate()
        daemon.wait(10)
    # the scraper drops a removed node at its next reconcile (once an interval)
    _wait("the spare node gone from the live view",
          lambda: spare.name not in {n.name for n in live_view.list_nodes(live.cp)}, 30)


def _metrics(live, name: str) -> str:
    inv = next(n for n in live.cp.inventory.nodes() if n.name == name)
    return httpx.get(f"{inv.url}/metrics", timeout=10, headers={
        "Authorization": f"Bearer {inv.token_file.read_text().strip()}"}).text
