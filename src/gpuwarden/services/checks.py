"""Node health checks for the API, the CLI and the agent: run them on nodes (the node
daemons measure, the control plane compares across the cluster and stores), read the last
results and their history, and react: a failed check opens a ``node_check`` alert and
drains the node under the ``checks.drain`` policy (dry-run | approve | auto, through the
watchdog's actions table); a node that passes again is resumed only if gpuwarden drained it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from gpuwarden.checks import (
    BURN_IN_REASON,
    CheckResult,
    Expectation,
    check_level,
    load_checks,
)
from gpuwarden.checks.react import react
from gpuwarden.checks.remote import ask_node, compare_versions, slurm_places
from gpuwarden.checks.store import CheckStore, StoredRun
from gpuwarden.errors import NotFoundError
from gpuwarden.nodeclient import NodeClient, NodeError
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import CheckCounts, CheckResultView, CheckRunView, NodeChecks
from gpuwarden.state.inventory import Node
from gpuwarden.watchdog.health import DRAIN_POLICY, check_alerts

log = logging.getLogger(__name__)


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
    book = store(cp)
    judged = {name: at for name, (at, _) in book.run_times().items()}

    async def one(node: Node) -> tuple[list[CheckResult], str | None]:
        # the XID checks judge the XIDs since the node's last run (a hardware XID fails
        # one run; the next passes unless another came)
        expect = replace(expectation(cp, node), xids_since=judged.get(node.name))
        try:
            return await ask_node(NodeClient(http, node.url, node.token_file, timeout=3600),
                                  level, expect, overrides), None
        except NodeError as exc:
            return [], str(exc)

    answers = dict(zip([n.name for n in nodes],
                       await asyncio.gather(*(one(n) for n in nodes)), strict=True))
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
    opened = await asyncio.to_thread(check_alerts, cp.db, store(cp), cp.config.checks.drain,
                                     cp.clock, {n: p.drained for n, p in places.items()})
    policies = opened.policies
    for action_id in opened.proposed:
        record = policies.get(action_id)
        done[record.target] = f"drain {record.state} (action {action_id}, policy "\
                              f"{cp.config.checks.drain})"
    for record in await policies.run_approved(ControlPlaneExecutor(cp, who),
                                              only=lambda r: r.policy == DRAIN_POLICY):
        done[record.target] = f"drain {record.state}: {record.result}"
    return done


def counts(cp: ControlPlane, slurm_nodes: Sequence[Mapping[str, Any]]) -> CheckCounts:
    """The Overview's node health figures: nodes Slurm holds drained for their burn-in
    (``slurm_nodes``: the controller's snapshot), and inventory nodes whose last run failed."""
    known = {n.name for n in cp.inventory.nodes()}
    burn_in = sum(1 for n in slurm_nodes if n.get("reason") == BURN_IN_REASON
                  and "DRAIN" in (n.get("flags") or []))
    failing = sum(1 for name, last in store(cp).last_runs().items()
                  if name in known and last.verdict == "fail")
    return CheckCounts(burn_in=burn_in, failing=failing)


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
