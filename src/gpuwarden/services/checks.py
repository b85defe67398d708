"""Node health checks for the API, the CLI and the agent: run them on nodes (the node
daemons measure, the control plane compares across the cluster and stores), read the last
results and their history, and react: a failed check opens a ``node_check`` alert and
drains the node under the ``checks.drain`` policy (dry-run | approve | auto, through the
watchdog's actions table); a node that passes again is resumed only if gpuwarden drained it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gpuwarden.checks import CheckResult, Expectation, check_level, drain_reason, load_checks
from gpuwarden.checks.react import react
from gpuwarden.checks.remote import ask_node, compare_versions, slurm_places
from gpuwarden.checks.store import CheckStore, StoredRun
from gpuwarden.config import PolicyConfig
from gpuwarden.errors import NotFoundError
from gpuwarden.nodeclient import NodeClient, NodeError
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import CheckResultView, CheckRunView, NodeChecks
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.inventory import Node
from gpuwarden.watchdog.actions import Policies
from gpuwarden.watchdog.alerts import AlertBook
from gpuwarden.watchdog.evaluators import Finding
from gpuwarden.watchdog.rules import RuleSpec

log = logging.getLogger(__name__)

CHECK_RULE = "node_check"  # the alerts' rule id (the watchdog keeps these open)
DRAIN_POLICY = "checks:drain"
_RULE = RuleSpec.model_validate({"id": CHECK_RULE, "kind": "slurm_node_state",
                                 "severity": "critical", "summary": "{summary}"})


def store(cp: ControlPlane) -> CheckStore:
    return CheckStore(cp.db, cp.clock, cp.config.checks.retention_days * 86400.0)


def _nodes(cp: ControlPlane, names: Sequence[str]) -> list[Node]:
    nodes = [n for n in cp.inventory.nodes() if n.status != "STOPPED"]
    if not names:
        return nodes
    known = {n.name: n for n in cp.inventory.nodes()}
    missing = [n for n in names if n not in known]
    if missing:
        raise NotFoundError(f"no node {', '.join(missing)} in the inventory (nodes: "
                            f"{', '.join(sorted(known)) or 'none'})")
    return [known[n] for n in names]


def expectation(cp: ControlPlane, node: Node) -> Expectation:
    """What the node was asked for: its cluster file's GPUs per node and GPU type."""
    if node.source != "provider":
        return Expectation()
    from gpuwarden.providers.registry import home_of, load_saved

    try:
        spec = load_saved(home_of(cp.db), node.cluster)
    except Exception:  # a cluster file gone or unreadable: nothing to compare with
        return Expectation()
    return Expectation(spec.gpus_per_node, spec.gpu_type)


async def run(cp: ControlPlane, names: Sequence[str] = (), level: str = "quick", *,
              who: str = "checks", trigger: str = "on-demand") -> list[NodeChecks]:
    """Run the checks up to ``level`` on ``names`` (every node when empty), store the
    results and react; returns each node's results with what was done."""
    check_level(level, "level")
    nodes = _nodes(cp, names)
    overrides = cp.config.checks.checks
    specs = load_checks(overrides)
    http = cp.http()

    async def one(node: Node) -> tuple[list[CheckResult], str | None]:
        try:
            return await ask_node(NodeClient(http, node.url, node.token_file, timeout=3600),
                                  level, expectation(cp, node), overrides), None
        except NodeError as exc:
            return [], str(exc)

    answers = dict(zip([n.name for n in nodes],
                       await asyncio.gather(*(one(n) for n in nodes)), strict=True))
    book = store(cp)
    others = {}
    for name in {n.name for n in cp.inventory.nodes()} - set(answers):
        for check, (_, result) in book.latest(name).items():
            if any(s.name == check and s.kind == "versions" for s in specs):
                others[name] = result.figure
    judged = compare_versions(specs, {n: rs for n, (rs, err) in answers.items() if not err},
                              others)
    runs = {name: book.record(name, level, trigger, judged.get(name, []), error)
            for name, (_, error) in answers.items()}
    reactions = await _react(cp, runs, who)
    return [_view(book, name, reactions.get(name)) for name in answers]


async def _react(cp: ControlPlane, runs: dict[str, StoredRun], who: str) -> dict[str, str]:
    """Resume nodes gpuwarden drained that pass now; open alerts for failed nodes and
    propose their drain under the policy; run it at once when the policy allows."""
    from gpuwarden.services import slurm
    from gpuwarden.services.executor import ControlPlaneExecutor

    done: dict[str, str] = {}
    try:
        controller = slurm._controller(cp, cp.http())
        places = await slurm_places(controller)
    except (NodeError, NotFoundError) as exc:
        places = {}
        log.info("checks: no Slurm reaction (%s)", exc)
    for name, run_ in runs.items():
        place = places.get(name)
        if place is None or run_.verdict == "error":
            continue
        reaction = react(run_.results, place.drained, place.reason)
        if reaction.action == "resume":
            await slurm.node_action(cp, cp.http(), who, name, "resume")
            done[name] = f"resumed: {reaction.why}"
        elif reaction.action == "drain" and place.drained:  # drained by us: a new reason
            await slurm.node_action(cp, cp.http(), who, name, "drain", reaction.reason)
            done[name] = f"kept drained: {reaction.reason}"
        elif reaction.action == "none":
            done[name] = reaction.why
    # the alerts: one per node whose last run failed (the others resolve)
    book = store(cp)
    findings = []
    for name, last in book.last_runs().items():
        if last.verdict != "fail":
            continue
        failed = next(r for _, r in book.latest(name).values() if r.verdict == "fail")
        reason = drain_reason(failed)
        findings.append(Finding(name, {"node": name, "slurm_node": name, "check": failed.name,
                                       "action_reason": reason},
                                context={"summary": f"{name}: {reason}"}))
    alerts = AlertBook(cp.db)
    transitions = await asyncio.to_thread(alerts.apply, [(_RULE, findings)], cp.clock())
    policy = PolicyConfig(rule=CHECK_RULE, action="drain_node", mode=cp.config.checks.drain,
                          name=DRAIN_POLICY)
    policies = Policies(cp.db, [policy], alerts, AuditLog(cp.db), cp.clock)
    # a drain is proposed for a node Slurm has and that is not drained yet
    fired = [t for t in transitions if t.event == "firing" and t.alert.subject in places
             and not places[t.alert.subject].drained]
    for action_id in policies.on_transitions(fired):
        record = policies.get(action_id)
        done[record.target] = f"drain {record.state} (action {action_id}, policy "\
                              f"{cp.config.checks.drain})"
    for record in await policies.run_approved(ControlPlaneExecutor(cp, who),
                                              only=lambda r: r.policy == DRAIN_POLICY):
        done[record.target] = f"drain {record.state}: {record.result}"
    return done


def node_checks(cp: ControlPlane, name: str, history: int = 20) -> NodeChecks:
    if name not in {n.name for n in cp.inventory.nodes()}:
        raise NotFoundError(f"no node {name!r} in the inventory")
    return _view(store(cp), name, None, history)


def _view(book: CheckStore, name: str, reaction: str | None, history: int = 20) -> NodeChecks:
    last = [_result_view(r, at) for at, r in book.latest(name).values()]
    runs = [CheckRunView(id=r.id, node=r.node, level=r.level, trigger=r.trigger, at=r.at,
                         verdict=r.verdict, error=r.error,  # type: ignore[arg-type]
                         results=[_result_view(x, r.at) for x in r.results])
            for r in book.runs(name, history)]
    return NodeChecks(node=name, last=last, runs=runs, reaction=reaction)


def _result_view(r: CheckResult, at: float | None) -> CheckResultView:
    return CheckResultView(name=r.name, level=r.level, verdict=r.verdict, figure=r.figure,
                           expected=r.expected, description=r.description, value=r.value,
                           at=at)
