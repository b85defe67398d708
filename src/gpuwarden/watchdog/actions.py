"""Actions under policy.  A policy ties a rule to an action and a mode:

* ``dry-run`` (the default): the action is recorded and audited as what *would* run;
* ``approve``: it waits for an operator to approve or deny it (API, UI);
* ``auto``: it runs at once.

Before anything runs, the alert that caused it must still be firing (state is re-checked),
and every step (proposed, approved, denied, executed, failed) goes to the audit log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gpuwarden.config import PolicyConfig
from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.alerts import Alert, AlertBook, Transition

log = logging.getLogger(__name__)


class Executor(Protocol):
    async def drain_node(self, node: str, reason: str) -> str: ...

    async def cancel_job(self, job_id: str, reason: str) -> str: ...

    async def requeue_job(self, job_id: str, reason: str) -> str: ...

    async def hold_job(self, job_id: str, reason: str) -> str: ...

    async def stop_pod(self, node: str, reason: str) -> str: ...

    async def replace_node(self, node: str, reason: str) -> str: ...


@dataclass(frozen=True, slots=True)
class ActionRecord:
    id: int
    alert_id: int | None
    policy: str
    action: str
    target: str
    mode: str
    state: str  # dry-run | awaiting_approval | approved | denied | executed | failed
    reason: str
    proposed_at: float
    decided_by: str | None
    decided_at: float | None
    result: str | None


def _record(row: Any) -> ActionRecord:
    return ActionRecord(row["id"], row["alert_id"], row["policy"], row["action"], row["target"],
                        row["mode"], row["state"], row["reason"], row["proposed_at"],
                        row["decided_by"], row["decided_at"], row["result"])


JOB_ACTIONS = ("cancel_job", "requeue_job", "hold_job")
Recheck = Callable[["ActionRecord"], Awaitable[str | None]]


def action_target(action: str, alert: Alert) -> str | None:
    labels = alert.labels
    if action in ("drain_node", "stop_pod", "replace_node"):
        return labels.get("slurm_node") or labels.get("node")
    if action in JOB_ACTIONS:
        return labels.get("job_id")
    return None


class Policies:
    def __init__(self, db: StateDB, policies: Sequence[PolicyConfig], alerts: AlertBook,
                 audit: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._policies = list(policies)
        self._alerts = alerts
        self._audit = audit
        self._clock = clock

    def on_transitions(self, transitions: Sequence[Transition]) -> list[int]:
        """Propose the policies' actions for alerts that just fired."""
        created = []
        for t in transitions:
            if t.event != "firing":
                continue
            for i, policy in enumerate(self._policies):
                if policy.rule != t.alert.rule:
                    continue
                target = action_target(policy.action, t.alert)
                name = policy.name or f"policy{i + 1}:{policy.rule}->{policy.action}"
                if target is None:
                    self._audit.write("watchdog", policy.action, t.alert.subject, "skipped",
                                      policy=name, why="the alert names no target for it")
                    continue
                state = {"dry-run": "dry-run", "approve": "awaiting_approval",
                         "auto": "approved"}[policy.mode]
                # an alert may carry the action's reason (a failed check's Slurm reason)
                reason = (t.alert.labels.get("action_reason")
                          or f"gpuwarden watchdog: {t.alert.summary}")[:200]
                with self._db.write() as conn:
                    cur = conn.execute(
                        "INSERT INTO actions(alert_id, policy, action, target, args, mode, state, "
                        "reason, proposed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (t.alert.id, name, policy.action, target, json.dumps({}), policy.mode,
                         state, reason, self._clock()))
                action_id = int(cur.lastrowid)
                outcome = "would run (dry-run)" if state == "dry-run" else "proposed"
                self._audit.write("watchdog", policy.action, target, outcome, action_id=action_id,
                                  policy=name, alert_id=t.alert.id, mode=policy.mode)
                created.append(action_id)
        return created

    def list(self, state: str | None = None, limit: int = 200) -> list[ActionRecord]:
        conn = self._db.connect()
        if state:
            rows = conn.execute("SELECT * FROM actions WHERE state = ? ORDER BY id DESC LIMIT ?",
                                (state, limit))
        else:
            rows = conn.execute("SELECT * FROM actions ORDER BY id DESC LIMIT ?", (limit,))
        return [_record(r) for r in rows.fetchall()]

    def get(self, action_id: int) -> ActionRecord:
        row = self._db.connect().execute("SELECT * FROM actions WHERE id = ?",
                                         (action_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no action with id {action_id}")
        return _record(row)

    def decide(self, action_id: int, who: str, approve: bool) -> ActionRecord:
        record = self.get(action_id)
        if record.state != "awaiting_approval":
            raise ConflictError(f"action {action_id} is {record.state}, not awaiting approval")
        state = "approved" if approve else "denied"
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE actions SET state = ?, decided_by = ?, decided_at = ? "
                "WHERE id = ? AND state = 'awaiting_approval'",
                (state, who, self._clock(), action_id))
        if cur.rowcount == 0:
            raise ConflictError(f"action {action_id} was decided by someone else meanwhile")
        self._audit.write(who, record.action, record.target, state, action_id=action_id)
        return self.get(action_id)

    async def run_approved(self, executor: Executor, *,
                           only: Callable[[ActionRecord], bool] | None = None,
                           recheck: Recheck | None = None) -> list[ActionRecord]:
        """Execute approved actions (those ``only`` selects) whose cause still holds,
        re-checked now: the alert still fires, and ``recheck`` (when given) names no reason
        to hold back."""
        done = []
        for record in self.list("approved"):
            if only is not None and not only(record):
                continue
            alert = self._alerts.get(record.alert_id) if record.alert_id else None
            if alert is not None and alert.state != "firing":
                self._finish(record, "failed", f"not run: the alert is {alert.state} now")
                continue
            if recheck is not None:
                why = await recheck(record)
                if why is not None:
                    self._finish(record, "failed", f"not run: {why}")
                    done.append(self.get(record.id))
                    continue
            fn = {"drain_node": executor.drain_node, "cancel_job": executor.cancel_job,
                  "requeue_job": executor.requeue_job, "hold_job": executor.hold_job,
                  "stop_pod": executor.stop_pod,
                  "replace_node": executor.replace_node}[record.action]
            try:
                result = await fn(record.target, record.reason)
            except GpuwardenError as exc:
                self._finish(record, "failed", str(exc))
            except Exception as exc:  # an executor bug is a failed action, not a dead loop
                log.exception("action %d failed", record.id)
                self._finish(record, "failed", f"{type(exc).__name__}: {exc}")
            else:
                self._finish(record, "executed", result)
            done.append(self.get(record.id))
        return done

    def _finish(self, record: ActionRecord, state: str, result: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE actions SET state = ?, result = ? WHERE id = ?",
                         (state, result[:500], record.id))
        actor = record.decided_by or "watchdog"
        self._audit.write(actor, record.action, record.target, state, action_id=record.id,
                          result=result[:500])
