"""The agent scenario suite.  Each folder holds ``scenario.yaml``: the prompt, the part of the
live cluster's state it relies on (``state``; set up once for all scenarios by
``tests/agent/live.py``: a real 5-node local Slurm cluster with simulated GPUs), what the
analyzers should answer with no LLM, the scripted model's tool calls, the tools a correct
run calls, the facts a correct answer contains (regular expressions, case-insensitive) and
the actions it may propose.

Scored deterministically: required facts present, required tools called, no action executed
and none proposed beyond ``proposals``.  In CI it runs the analyzers and the scripted model
(whose answer is made only of what the real tools returned).  With ``GPUWARDEN_EVAL_MODEL``
set (``openai:MODEL`` or ``anthropic:MODEL``; ``GPUWARDEN_EVAL_BASE_URL``,
``GPUWARDEN_EVAL_API_KEY_ENV`` as needed) every scenario also runs against that real model,
and the suite prints pass rate, latency and cost per scenario.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpuwarden.agent import analyzers, router
from gpuwarden.agent.service import AgentService
from gpuwarden.config import AgentConfig
from gpuwarden.services import live as live_view
from gpuwarden.state.audit import AuditLog
from tests.agent.live import _wait, node
from tests.agent.scripted import ANSWER, Script, gullible

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
SCENARIOS = sorted(p.parent.name for p in HERE.glob("*/scenario.yaml"))
RESULTS: list[dict[str, Any]] = []


def load(name: str, live) -> dict[str, Any]:
    text = (HERE / name / "scenario.yaml").read_text()
    raw = yaml.safe_load(text)
    if raw.get("accounting") and not live.accounting:
        pytest.skip("needs Slurm accounting: apt-get install -y mariadb-server slurmdbd")
    if raw.get("wait_ended"):  # a job that ends by itself, later than the setup waits
        live.wait_ended(raw["wait_ended"])
    text = re.sub(r"\{job:([a-z-]+)\}", lambda m: str(live.jobs[m.group(1)]), text)
    text = re.sub(r"\{node:(\d)\}", lambda m: node(int(m.group(1))), text)
    spec = yaml.safe_load(text)
    calls = [c for step in (spec["script"] if isinstance(spec["script"], list) else [])
             for c in step] + spec.get("proposals", [])
    for _, args in calls:
        for key in ("job_id", "gpu"):
            if isinstance(args.get(key), str) and args[key].isdigit():
                args[key] = int(args[key])
    return spec


def missing_facts(facts: list[str], text: str) -> list[str]:
    return [f for f in facts if not re.search(f, text, re.I)]


def called_tools(svc: AgentService, run_id: str) -> list[str]:
    stored = json.loads(svc.cp.db.connect().execute(
        "SELECT messages FROM agent_runs WHERE id = ?", (run_id,)).fetchone()[0])
    return [p["tool_name"] for m in stored.get("messages", []) for p in m["parts"]
            if p.get("part_kind") == "tool-call"]


def score(svc: AgentService, view, spec: dict[str, Any], audit_before: int) -> list[str]:
    problems = []
    if view.status == "failed":
        problems.append(f"run failed: {view.error}")
    lacking = missing_facts(spec.get("facts", []), view.answer)
    if lacking:
        problems.append(f"facts missing: {lacking}")
    tools = called_tools(svc, view.id)
    for t in spec.get("tools", []):
        if t not in tools:
            problems.append(f"tool {t} not called (called: {tools})")
    expected = spec.get("proposals", [])

    def wanted(call) -> bool:
        return any(call.tool == name and all(call.args.get(k) == v for k, v in args.items())
                   for name, args in expected)

    proposed = [c for c in view.calls if c.state == "proposed"]
    extra = [c for c in proposed if not wanted(c)]
    if extra:
        problems.append(f"unasked proposals: {[(c.tool, c.args) for c in extra]}")
    if expected and not proposed:
        problems.append(f"expected proposals {expected}, got "
                        f"{[(c.tool, c.args, c.state) for c in view.calls]}")
    if [c for c in view.calls if c.state in ("executed", "approved")]:
        problems.append("an action executed without approval")
    if len(AuditLog(svc.cp.db).list(100_000)) != audit_before:
        problems.append("the audit log changed: something was executed")
    return problems


async def run_agent(live, spec: dict[str, Any], model=None, config: AgentConfig | None = None):
    async with httpx.AsyncClient() as client:
        svc = AgentService(live.cp, model=model, client=client)
        old = live.cp.config.agent
        if config is not None:
            live.cp.config.agent = config
        try:
            start = time.monotonic()
            view = await svc.ask(spec["prompt"], "scenario (viewer)")
            return svc, view, time.monotonic() - start
        finally:
            live.cp.config.agent = old


def test_there_are_enough_scenarios_in_every_category():
    cats: dict[str, int] = {}
    for name in SCENARIOS:
        spec = yaml.safe_load((HERE / name / "scenario.yaml").read_text())
        cats[spec["category"]] = cats.get(spec["category"], 0) + 1
    assert len(SCENARIOS) >= 20
    assert {"pending", "waste", "faulty_gpu", "down_node", "no_tool"} <= set(cats)


@pytest.mark.parametrize("name", SCENARIOS)
def test_analyzers(live, name):
    """With no LLM: the right analyzer answers, or the answer says plainly what it cannot."""
    spec = load(name, live)
    result = asyncio.run(router.route(live.cp, spec["prompt"]))
    expect = spec["analyzers"]
    if expect == "needs_llm":
        assert result is None
        assert "No LLM is configured" in asyncio.run(router.answer(live.cp, spec["prompt"]))
        return
    if expect == "no_tool":
        assert isinstance(result, str) and "no tool for that" in result
        return
    if expect == "needs_agent":
        assert isinstance(result, str) and "needs the LLM agent" in result
        return
    assert isinstance(result, analyzers.Analysis), result
    assert result.kind == expect
    facts = spec.get("analyzer_facts", spec.get("facts", []))
    assert not missing_facts(facts, result.text()), result.text()


TRUTH = [n for n in SCENARIOS if "truth" in yaml.safe_load((HERE / n / "scenario.yaml")
                                                           .read_text())]


@pytest.mark.parametrize("name", TRUTH)
def test_the_analyzers_answer_what_slurm_and_the_nodes_say(live, name):
    """The analyzer's answer checked against Slurm's own commands (squeue, sacct, with the
    cluster's SLURM_CONF) or the node daemon's /metrics, at the time of asking."""
    spec = load(name, live)
    truth = spec["truth"]
    if "squeue" in truth:
        truth_pending(live, live.jobs[truth["squeue"]], spec)
    if "start" in truth:
        truth_start(live, live.jobs[truth["start"]])
    if "ended" in truth:
        truth_ended(live, live.jobs[truth["ended"]], spec)
    if "limit" in truth:
        truth_limit(live, live.jobs[truth["limit"]])
    if "xids" in truth:
        truth_xids(live, node(truth["xids"]), spec)


def _pending_view(live, job_id: int, reason: str) -> analyzers.Analysis:
    """The analysis once gpuwarden's Slurm view has caught up with squeue's reason (one
    collector cycle and one scrape behind at most)."""
    deadline = time.monotonic() + 20
    while True:
        a = analyzers.explain_pending(live.cp, job_id)
        if a.data.get("reason_raw") == reason or time.monotonic() > deadline:
            return a
        time.sleep(0.5)


def truth_pending(live, job_id: int, spec: dict[str, Any]) -> None:
    from gpuwarden.slurm import reasons

    assert live.squeue(job_id, "%T") == "PENDING"
    raw = live.squeue(job_id, "%r")
    a = _pending_view(live, job_id, raw)
    r = reasons.reason(raw)
    assert a.data["reason_raw"] == raw and a.data["reason"] == r.code, (raw, a.data)
    assert f"pending ({r.code})" in a.summary and r.text in a.summary, a.summary
    assert asyncio.run(router.route(live.cp, spec["prompt"])).data["reason"] == r.code
    if r.code == "Priority":  # "ahead" is exactly the pending jobs Slurm ranks higher
        rows = [line.split() for line in live.slurm(
            "squeue", "-h", "-t", "PD", "-p", live.squeue(job_id, "%P"), "-o", "%i %Q")
            .splitlines()]
        prio = {int(i): int(q) for i, q in rows}
        higher = {i for i, q in prio.items() if q > prio[job_id]}
        assert higher and set(a.data["ahead"]) == higher, (a.data["ahead"], prio)
    if r.code == "ReqNodeNotAvail":
        named = live.slurm("scontrol", "show", "hostnames", r.detail.split(":", 1)[1]).split()
        assert a.data["unavailable_nodes"] == named
        for n in named:  # each with the state sinfo gives it
            state = live.slurm("sinfo", "-h", "-N", "-n", n, "-o", "%T").split()[0]
            assert f"{n} is {state.rstrip('*~#!%$@^-')}" in a.summary, (state, a.summary)
    if r.code.startswith("JobHeld"):
        assert f"scontrol release {job_id}" in a.summary
    if r.code == "Resources":  # GPU holders: running jobs that hold GPUs, per squeue
        gres = {int(i): b for i, b in (line.split(" ", 1) for line in live.slurm(
            "squeue", "-h", "-t", "R", "-o", "%i %b").splitlines())}
        assert a.data["gpu_holders"]
        assert all("gpu" in gres[h] for h in a.data["gpu_holders"]), gres
        for cpu_only in (i for i, b in gres.items() if "gpu" not in b):
            assert f" {cpu_only}," not in a.summary and f" {cpu_only}." not in a.summary


def truth_limit(live, job_id: int) -> None:
    """A job held by a QOS or association limit: the limit the analyzer names is the one
    sacctmgr shows set on the job's QOS (squeue %q) or account (%a), and the jobs it counts
    against it are the running ones squeue lists there."""
    a = _pending_view(live, job_id, live.squeue(job_id, "%r"))
    lim = a.data["limit"]
    qos, account, user = (live.squeue(job_id, f) for f in ("%q", "%a", "%u"))
    assert (lim["qos"], lim["account"]) == (qos, account), lim
    if lim["scope"] == "qos":
        shown = live.slurm("sacctmgr", "-n", "-P", "show", "qos", qos,
                           f"format={lim['setting']}")
        assert f"QOS {qos}" in a.summary
    else:
        shown = live.slurm("sacctmgr", "-n", "-P", "show", "assoc", "where", f"account={account}",
                           f"format={lim['setting']}")
        assert f"account {account}" in a.summary
    assert f"{lim['tres']}=" in shown, (lim, shown)  # set there, on that TRES
    assert f"{lim['setting']} ({lim['tres']})" in a.summary, a.summary
    running = [line.split("|") for line in live.slurm(
        "squeue", "-h", "-t", "R", "-o", "%i|%q|%a|%u").splitlines()]
    there = {int(i) for i, q, acc, u in running
             if (q == qos if lim["scope"] == "qos" else acc == account)
             and (not lim["per_user"] or u == user)}
    assert there and set(lim["holders"]) == there, (lim["holders"], running)
    assert all(str(h) in a.summary for h in there), a.summary


def truth_start(live, job_id: int) -> None:
    """The earliest start agrees with Slurm's own estimate (squeue --start) to the
    minute."""
    # Slurm estimates a pending job's start on a backfill pass (every 30 s by default): it
    # says N/A until the first one after the job was submitted
    estimate = _wait(f"Slurm's start estimate for job {job_id}", lambda: (
        (s := live.slurm("squeue", "-h", "--start", "-j", str(job_id), "-o", "%S").strip())
        not in ("", "N/A") and s), 90)
    a = analyzers.explain_pending(live.cp, job_id)
    ours = a.data.get("slurm_estimate") or a.data["earliest_by_time_limits"]
    slurm_ts = dt.datetime.fromisoformat(estimate).timestamp()
    assert abs(ours - slurm_ts) <= 120, (estimate, ours)


def truth_ended(live, job_id: int, spec: dict[str, Any]) -> None:
    a = asyncio.run(router.route(live.cp, spec["prompt"]))
    assert a.kind == "outcome"
    try:  # "CANCELLED by 0|0:15": the state's first word
        row = live.slurm("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o",
                         "State,ExitCode").splitlines()[0]
        state, code = row.split("|")
        state = state.split()[0]
    except subprocess.CalledProcessError:  # no accounting: squeue, while it keeps the job
        state, code = live.squeue(job_id, "%T"), None
    if not state:
        assert a.data["found"] is False and "MinJobAge" in a.summary
        return
    assert a.data["state"] == state and state in a.summary, (state, a.summary)
    nodes = live.slurm("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "NodeList")
    assert a.data["nodes"] == [nodes.strip()] and nodes.strip() in a.summary
    if code is not None:
        rc, sig = (int(x) for x in code.split(":"))
        assert (a.data["exit_code"], a.data["signal"] or 0) == (rc, sig)
        assert f"exit code {rc}" in a.summary
        if sig:
            assert f"signal {sig}" in a.summary, a.summary
    assert "MinJobAge" not in a.summary


def _xids(live, name: str) -> dict[tuple[int, int], int]:
    """(gpu, xid) -> count from the node daemon's own /metrics."""
    inv = next(n for n in live.cp.inventory.nodes() if n.name == name)
    text = httpx.get(f"{inv.url}/metrics", timeout=10, headers={
        "Authorization": f"Bearer {inv.token_file.read_text().strip()}"}).text
    out = {}
    for m in re.finditer(r'^gpuwarden_xid_errors_total\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(int(labels["gpu"]), int(labels["xid"]))] = int(float(m.group(2)))
    return out


def truth_xids(live, name: str, spec: dict[str, Any]) -> None:
    from gpuwarden.gpu.model import is_application_xid

    deadline = time.monotonic() + 90  # flaky-kernel raises XID 79 now and then
    while not any(not is_application_xid(x) for _, x in _xids(live, name)):
        assert time.monotonic() < deadline, f"no hardware XID on {name} in 90 s"
        time.sleep(1)
    before = _xids(live, name)
    read = time.time()
    # gpuwarden's view at least as new as `before`: the scrape after the first one to end
    # after `before` was read began after it (a node's scrapes run one after another)
    ended = _wait("a scrape ending after that", lambda: (
        (s := live_view.get_node(live.cp, name).last_success) is not None and s > read and s), 30)
    _wait("the scrape after it", lambda: (live_view.get_node(live.cp, name).last_success
                                          or 0.0) > ended, 30)
    a = asyncio.run(router.route(live.cp, spec["prompt"]))
    after = _xids(live, name)
    seen = {(g["gpu"], int(x)): c for g in a.data["gpus"] for x, c in g["xids"].items()}
    assert set(before) <= set(seen) <= set(after), (before, seen, after)
    assert all(before[k] <= seen[k] <= after[k] for k in seen), (before, seen, after)
    # worst first: the most severe hardware XID leads, every application one comes after
    # every hardware one, the GPU's count is in the words; failed health checks come
    # before all of it (the watchdog records a hardware XID as a failed check)
    problems = a.data["problems"]
    failed_checks = [p for p in problems if p.startswith("check ")]
    assert problems[:len(failed_checks)] == failed_checks, problems
    problems = problems[len(failed_checks):]
    worst_gpu, worst = min(((g, x) for g, x in seen if not is_application_xid(x)),
                           key=lambda k: analyzers.xid_rank(k[1]))
    first = next(p for p in problems if "XID" in p)
    assert first == (f"gpu{worst_gpu} hardware XID {worst} ×{seen[(worst_gpu, worst)]} "
                     f"({analyzers.XID_SHORT[worst]})"), problems
    kinds = ["app" if "application" in p else "hw" for p in problems if "XID" in p]
    assert kinds == sorted(kinds, key=lambda k: k == "app"), problems
    assert problems.index(first) < min((i for i, p in enumerate(problems)
                                        if "thermal" in p), default=len(problems))
    assert a.summary.startswith(f"{name}: ") and first in a.summary


@pytest.mark.parametrize("name", SCENARIOS)
def test_scripted_model(live, name):
    spec = load(name, live)
    if spec["script"] == "gullible":
        script = Script([gullible])
    else:
        steps: list[Any] = [[tuple(c) for c in step] for step in spec["script"]]
        script = Script([*steps, ANSWER])
    audit_before = len(AuditLog(live.cp.db).list(100_000))
    svc, view, _ = asyncio.run(run_agent(live, spec, model=script.model))
    if spec.get("proposals"):
        assert view.status == "awaiting_approval", view
    problems = score(svc, view, spec, audit_before)
    assert not problems, problems
    if spec.get("unknown_tool"):  # pydantic-ai refused the invented tool; the model heard it
        assert f"Unknown tool name: '{spec['unknown_tool']}'" in script.sent_text()
        assert not view.calls


def _eval_config() -> AgentConfig | None:
    model = os.environ.get("GPUWARDEN_EVAL_MODEL")
    if not model:
        return None
    provider, _, name = model.partition(":")
    return AgentConfig(provider=provider, model=name,
                       base_url=os.environ.get("GPUWARDEN_EVAL_BASE_URL"),
                       api_key_env=os.environ.get("GPUWARDEN_EVAL_API_KEY_ENV"),
                       input_price_per_mtok=_float("GPUWARDEN_EVAL_INPUT_PRICE"),
                       output_price_per_mtok=_float("GPUWARDEN_EVAL_OUTPUT_PRICE"))


def _float(var: str) -> float | None:
    return float(os.environ[var]) if os.environ.get(var) else None


@pytest.mark.skipif(not os.environ.get("GPUWARDEN_EVAL_MODEL"),
                    reason="set GPUWARDEN_EVAL_MODEL to evaluate a real model")
@pytest.mark.parametrize("name", SCENARIOS)
def test_real_model(live, name, request):
    spec = load(name, live)
    audit_before = len(AuditLog(live.cp.db).list(100_000))
    svc, view, seconds = asyncio.run(run_agent(live, spec, config=_eval_config()))
    problems = score(svc, view, spec, audit_before)
    RESULTS.append({"scenario": name, "ok": not problems, "seconds": seconds,
                    "cost": view.usage.cost, "tokens": view.usage.input_tokens
                    + view.usage.output_tokens, "problems": problems})
    if name == SCENARIOS[-1]:
        request.config.pluginmanager.get_plugin("terminalreporter").write_line(_report())
    assert not problems, problems


def _report() -> str:
    lines = [f"{'scenario':28} {'ok':3} {'s':>6} {'tokens':>7} {'$':>8}"]
    for r in RESULTS:
        cost = f"{r['cost']:.4f}" if r["cost"] is not None else "?"
        lines.append(f"{r['scenario']:28} {'y' if r['ok'] else 'n':3} {r['seconds']:6.1f} "
                     f"{r['tokens']:7d} {cost:>8}")
    passed = sum(r["ok"] for r in RESULTS)
    lines.append(f"pass rate {passed}/{len(RESULTS)}")
    return "\n".join(lines)
