"""The watchdog loop: every ``interval`` seconds build the view, evaluate every enabled rule,
move alerts on, queue notifications, propose policy actions, deliver, run approved ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gpuwarden.checks import CheckResult, load_checks
from gpuwarden.checks.passive import xid_figure
from gpuwarden.checks.store import CheckStore
from gpuwarden.config import ServeConfig
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog.actions import Executor, Policies
from gpuwarden.watchdog.alerts import AlertBook, Transition
from gpuwarden.watchdog.evaluators import EVALUATORS, Finding
from gpuwarden.watchdog.health import CHECK_RULE, REPLACE_POLICY, check_alerts
from gpuwarden.watchdog.notify import Notifier, Sender, apprise_sender
from gpuwarden.watchdog.rules import RuleSpec, load_rules
from gpuwarden.watchdog.view import ClusterView, build_view

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(
        self,
        db: StateDB,
        config: ServeConfig,
        states: Callable[[], Mapping[str, TargetState]],
        *,
        executor: Executor | None = None,
        sender: Sender = apprise_sender,
        clock: Callable[[], float] = time.time,
    ) -> None:
        wd = config.watchdog
        cluster = wd.clusters.get(config.cluster)
        self.config = config
        self.rules: list[RuleSpec] = load_rules(
            wd.rules, cluster_overrides=cluster.rules if cluster else None)
        self.inventory = Inventory(db)
        self.alerts = AlertBook(db)
        self.audit = AuditLog(db)
        self.notifier = Notifier(db, wd.notify_urls(), sender=sender,
                                 owners=config.owners.url_for,
                                 rate_limit_per_minute=wd.rate_limit_per_minute)
        self.policies = Policies(db, wd.policies, self.alerts, self.audit, clock)
        self._db = db
        self.checks = CheckStore(db, clock, config.checks.retention_days * 86400.0)
        self._states = states
        self._executor = executor
        self._clock = clock
        self.cycles = 0
        self.last_cycle_seconds = 0.0
        self.last_view: ClusterView | None = None
        self._replacing: asyncio.Task[Any] | None = None
        known = {r.id for r in self.rules}
        for policy in wd.policies:
            if policy.rule not in known:
                from gpuwarden.errors import GpuwardenError

                raise GpuwardenError(f"watchdog.policies: rule {policy.rule!r} does not exist; "
                                     f"rules are: {', '.join(sorted(known))}")

    def findings(self, now: float) -> list[tuple[RuleSpec, Sequence[Finding]]]:
        view = build_view(now, self.config.cluster, self.inventory.nodes(), self._states())
        view = replace(view, checks_passed={  # what until_checks_pass rules wait for
            n: passed for n, (_, passed) in self.checks.run_times().items() if passed})
        self.last_view = view  # reclaim reads it rather than building its own
        results = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            try:
                found = EVALUATORS[rule.kind](view, rule, self.alerts.open_subjects(rule.id))
            except Exception:  # one broken rule must not blind the others
                log.exception("rule %s failed to evaluate", rule.id)
                continue
            results.append((rule, found))
        return results

    def evaluate(self, now: float | None = None) -> list[Transition]:
        """One cycle, synchronously: evaluate, record, queue notifications, propose."""
        began = time.perf_counter()
        now = self._clock() if now is None else now
        transitions = self.alerts.apply(self.findings(now), now)
        # node_check alerts are the node health checks' (services.checks), not a rule's
        transitions += self.alerts.retire_rules(
            [r.id for r in self.rules if r.enabled] + [CHECK_RULE], now)
        transitions += self._failed_checks(transitions)
        for t in transitions:
            log.info("alert %s: %s", t.event, t.alert.summary)
        self.notifier.enqueue(transitions, now)
        self.policies.on_transitions(transitions)
        self.cycles += 1
        self.last_cycle_seconds = time.perf_counter() - began
        return transitions

    def _failed_checks(self, transitions: Sequence[Transition]) -> list[Transition]:
        """A node whose ``until_checks_pass`` alert (a hardware XID) just fired gets a
        failed run of the hardware XID check, so its ``node_check`` alert fires and a drain
        is proposed under ``checks.drain`` with ``[gpuwarden-check] NAME: GPU 0: XID 79 x1``
        (run by :meth:`cycle` when approved); a later check run passes once no hardware XID
        came after this one."""
        sticky = {r.id for r in self.rules if r.until_checks_pass}
        nodes = sorted({t.alert.labels.get("node", "") for t in transitions
                        if t.event == "firing" and t.alert.rule in sticky} - {""})
        view = self.last_view
        if not nodes or view is None:
            return []
        spec = next((s for s in load_checks(self.config.checks.checks)
                     if s.kind == "xids" and s.xid_class == "hardware"), None)
        name, level, about = ((spec.name, spec.level, spec.description) if spec
                              else ("xid_hardware", "quick", "no hardware XID"))
        for node in nodes:
            passed = view.checks_passed.get(node, 0.0)
            per_gpu = [xid_figure(g.index, [(x.xid, x.count) for x in found])
                       for g in view.gpus if g.node == node
                       if (found := [x for x in g.xids if x.kind == "hardware"
                                     and x.last_seen > passed])]
            figure = "; ".join(per_gpu) or "a hardware XID"
            self.checks.record(node, level, "watchdog", [
                CheckResult(name, level, "fail", figure, "none", about, float(len(per_gpu)))])
        drained = {n.name: "DRAIN" in n.flags
                   for n in (view.slurm.nodes if view.slurm is not None else ())}
        return check_alerts(self._db, self.checks, self.config.checks, self._clock,
                            drained).transitions

    async def cycle(self) -> list[Transition]:
        transitions = await asyncio.to_thread(self.evaluate)
        await asyncio.to_thread(self.notifier.deliver, self._clock())
        if self._executor is not None:
            await self.policies.run_approved(  # reclaim runs its own, after its re-check
                self._executor, only=lambda r: not r.policy.startswith("reclaim:")
                and r.policy != REPLACE_POLICY)
            self._start_replacements()
        return transitions

    def _start_replacements(self) -> None:
        """Approved ``checks:replace`` actions run one at a time beside the cycles (a
        replacement takes minutes: a new machine and its burn-in)."""
        if self._executor is None or (self._replacing is not None
                                      and not self._replacing.done()):
            return
        if not any(r.policy == REPLACE_POLICY for r in self.policies.list("approved")):
            return
        self._replacing = asyncio.create_task(self.policies.run_approved(
            self._executor, only=lambda r: r.policy == REPLACE_POLICY),
            name="watchdog-replace")

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.config.watchdog.interval
        while not stop.is_set():
            try:
                await self.cycle()
            except Exception:
                log.exception("watchdog cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        if self._replacing is not None and not self._replacing.done():
            # serve stops: a replacement in flight is left to its thread; `gpuwarden up`
            # (or the next serve's watchdog) finishes what it could not
            self._replacing.cancel()
