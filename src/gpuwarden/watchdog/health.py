"""Node health alerts: one ``node_check`` alert per node whose last check run failed (the
others resolve), and the drain each new one proposes under the ``checks:drain`` policy
(``checks.drain``: dry-run | approve | auto) with the failed check's Slurm reason.  Shared
by a check run (``services.checks``) and the watchdog, which records a hardware XID as a
failed run of the hardware XID check."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gpuwarden.checks.model import drain_reason
from gpuwarden.checks.store import CheckStore
from gpuwarden.config import ChecksConfig, PolicyConfig
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.actions import Policies
from gpuwarden.watchdog.alerts import AlertBook, Transition
from gpuwarden.watchdog.evaluators import Finding
from gpuwarden.watchdog.rules import RuleSpec

CHECK_RULE = "node_check"  # the alerts' rule id (the watchdog keeps these open)
DRAIN_POLICY = "checks:drain"
REPLACE_POLICY = "checks:replace"
_RULE = RuleSpec.model_validate({"id": CHECK_RULE, "kind": "slurm_node_state",
                                 "severity": "critical", "summary": "{summary}"})


@dataclass(frozen=True, slots=True)
class CheckAlerts:
    transitions: list[Transition]
    proposed: list[int]  # the drain actions proposed
    policies: Policies  # to run the approved ones


def check_alerts(db: StateDB, book: CheckStore, checks: ChecksConfig,
                 clock: Callable[[], float], drained: Mapping[str, bool]) -> CheckAlerts:
    """Move the ``node_check`` alerts on from every node's last run; a new one proposes a
    drain (``checks.drain``) for a node Slurm has (``drained``: Slurm node -> its DRAIN
    flag) and that is not drained yet, and the replacement of its machine
    (``checks.replace``) when gpuwarden can replace it (:func:`replaceable_nodes`)."""
    findings = []
    for name, last in book.last_runs().items():
        if last.verdict != "fail":
            continue
        failed = next(r for _, r in book.latest(name).values() if r.verdict == "fail")
        reason = drain_reason(failed)
        findings.append(Finding(name, {"node": name, "slurm_node": name, "check": failed.name,
                                       "action_reason": reason},
                                context={"summary": f"{name}: {reason}"}))
    alerts = AlertBook(db)
    transitions = alerts.apply([(_RULE, findings)], clock())
    drain = PolicyConfig(rule=CHECK_RULE, action="drain_node", mode=checks.drain,
                         name=DRAIN_POLICY)
    replace = PolicyConfig(rule=CHECK_RULE, action="replace_node", mode=checks.replace,
                           name=REPLACE_POLICY)
    audit = AuditLog(db)
    policies = Policies(db, [drain], alerts, audit, clock)
    fired = [t for t in transitions if t.event == "firing"]
    proposed = policies.on_transitions([t for t in fired if t.alert.subject in drained
                                        and not drained[t.alert.subject]])
    if fired:
        from gpuwarden.providers.lifecycle import replaceable_nodes

        mine = replaceable_nodes(db)
        proposed += Policies(db, [replace], alerts, audit, clock).on_transitions(
            [t for t in fired if t.alert.subject in mine])
    return CheckAlerts(transitions, proposed, policies)
