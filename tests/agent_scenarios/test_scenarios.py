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
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpuwarden.agent import analyzers, router
from gpuwarden.agent.service import AgentService
from gpuwarden.config import AgentConfig
from gpuwarden.state.audit import AuditLog
from tests.agent.live import node
from tests.agent.scripted import ANSWER, Script, gullible

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
SCENARIOS = sorted(p.parent.name for p in HERE.glob("*/scenario.yaml"))
RESULTS: list[dict[str, Any]] = []


def load(name: str, live) -> dict[str, Any]:
    text = (HERE / name / "scenario.yaml").read_text()
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
