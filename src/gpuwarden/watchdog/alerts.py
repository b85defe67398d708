"""Alert state: pending -> firing -> resolved, one open alert per rule and subject, silences,
acknowledgements and history, all in the state database.

A cycle's changes are written in one transaction.  Flapping is prevented twice: evaluators
apply a ``clear`` threshold to subjects that are already active, and a firing alert
resolves only once its condition has been false for ``keep_firing_for``.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.evaluators import Finding
from gpuwarden.watchdog.rules import RuleSpec


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_summary(rule: RuleSpec, finding: Finding) -> str:
    context = _SafeDict(rule=rule.id, subject=finding.subject, **finding.context)
    try:
        return rule.summary.format_map(context)
    except (ValueError, TypeError, KeyError, IndexError):
        return f"{rule.id} on {finding.subject}"


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    rule: str
    subject: str
    severity: str
    state: str
    summary: str
    labels: Mapping[str, str]
    value: float | None
    started_at: float
    fired_at: float | None
    resolved_at: float | None
    last_true_at: float
    acknowledged_by: str | None
    acknowledged_at: float | None
    silenced: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    alert: Alert
    event: str  # "firing" | "resolved"


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    rule: str | None
    subject: str
    author: str
    comment: str
    created_at: float
    expires_at: float

    def matches(self, rule: str, subject: str) -> bool:
        return (self.rule in (None, "", rule)) and fnmatch.fnmatchcase(subject, self.subject)


def _alert(row: Any, silenced: bool = False) -> Alert:
    return Alert(row["id"], row["rule"], row["subject"], row["severity"], row["state"],
                 row["summary"], json.loads(row["labels"]), row["value"], row["started_at"],
                 row["fired_at"], row["resolved_at"], row["last_true_at"],
                 row["acknowledged_by"], row["acknowledged_at"], silenced)


class AlertBook:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    # -- evaluation ------------------------------------------------------------------------

    def open_subjects(self, rule_id: str) -> set[str]:
        rows = self._db.connect().execute(
            "SELECT subject FROM alerts WHERE rule = ? AND state != 'resolved'", (rule_id,))
        return {r[0] for r in rows}

    def apply(self, results: Sequence[tuple[RuleSpec, Sequence[Finding]]],
              now: float) -> list[Transition]:
        """Move every rule's alerts on by one cycle; returns what fired and what resolved."""
        transitions: list[Transition] = []
        with self._db.write() as conn:
            for rule, findings in results:
                open_rows = {r["subject"]: r for r in conn.execute(
                    "SELECT * FROM alerts WHERE rule = ? AND state != 'resolved'", (rule.id,))}
                seen = set()
                updates: list[tuple[Any, ...]] = []
                fired: list[int] = []
                for f in findings:
                    seen.add(f.subject)
                    summary = render_summary(rule, f)
                    row = open_rows.get(f.subject)
                    if row is None:
                        state = "firing" if rule.for_ <= 0 else "pending"
                        cur = conn.execute(
                            """INSERT INTO alerts(rule, subject, severity, state, summary, labels,
                               value, started_at, fired_at, last_true_at)
                               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                            (rule.id, f.subject, rule.severity, state, summary,
                             json.dumps(f.labels, sort_keys=True), f.value, now,
                             now if state == "firing" else None, now))
                        if state == "firing":
                            transitions.append(self._transition(conn, cur.lastrowid, "firing",
                                                                now))
                        continue
                    fire = row["state"] == "pending" and now - row["started_at"] >= rule.for_
                    updates.append((summary, f.value, json.dumps(f.labels, sort_keys=True), now,
                                    rule.severity, "firing" if fire or row["state"] == "firing"
                                    else "pending", now if fire else None, row["id"]))
                    if fire:
                        fired.append(row["id"])
                conn.executemany(  # one statement for the cycle's still-open alerts
                    """UPDATE alerts SET summary = ?, value = ?, labels = ?, last_true_at = ?,
                       severity = ?, state = ?, fired_at = COALESCE(fired_at, ?)
                       WHERE id = ?""", updates)
                transitions += [self._transition(conn, i, "firing", now) for i in fired]
                for subject, row in open_rows.items():
                    if subject in seen:
                        continue
                    if row["state"] == "pending":
                        conn.execute("DELETE FROM alerts WHERE id = ?", (row["id"],))
                    elif (rule.until_checks_pass  # its evaluator judged it: a check passed
                          or now - row["last_true_at"] >= rule.keep_firing_for):
                        conn.execute(
                            "UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE id = ?",
                            (now, row["id"]))
                        transitions.append(self._transition(conn, row["id"], "resolved", now))
        silences = self.silences()
        return [Transition(_with_silence(t.alert, silences), t.event) for t in transitions]

    def retire_rules(self, known: Sequence[str], now: float) -> list[Transition]:
        """Resolve the open alerts of rules that are no longer configured."""
        transitions = []
        with self._db.write() as conn:
            rows = conn.execute(
                f"SELECT id FROM alerts WHERE state != 'resolved' AND rule NOT IN "
                f"({','.join('?' * len(known))})", list(known)).fetchall()
            for row in rows:
                conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE id = ?",
                             (now, row["id"]))
                transitions.append(self._transition(conn, row["id"], "resolved", now))
        silences = self.silences()  # a silenced alert stays silent when its rule goes away
        return [Transition(_with_silence(t.alert, silences), t.event) for t in transitions]

    def _transition(self, conn: Any, alert_id: int, event: str, now: float) -> Transition:
        conn.execute("INSERT INTO alert_events(alert_id, at, event) VALUES (?, ?, ?)",
                     (alert_id, now, event))
        row = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return Transition(_alert(row), event)

    # -- reading ---------------------------------------------------------------------------

    def list(self, *, state: str | None = None, limit: int = 200) -> list[Alert]:
        """Open alerts (pending and firing) by default; ``state`` narrows or widens."""
        conn = self._db.connect()
        if state is None:
            rows = conn.execute("SELECT * FROM alerts WHERE state != 'resolved' "
                                "ORDER BY started_at DESC LIMIT ?", (limit,))
        elif state == "all":
            rows = conn.execute("SELECT * FROM alerts ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = conn.execute("SELECT * FROM alerts WHERE state = ? ORDER BY id DESC LIMIT ?",
                                (state, limit))
        silences = self.silences()
        return [_with_silence(_alert(r), silences) for r in rows.fetchall()]

    def get(self, alert_id: int) -> Alert:
        row = self._db.connect().execute("SELECT * FROM alerts WHERE id = ?",
                                         (alert_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no alert with id {alert_id}")
        return _with_silence(_alert(row), self.silences())

    def events(self, alert_id: int) -> list[dict[str, Any]]:
        rows = self._db.connect().execute(
            "SELECT at, event, actor, detail FROM alert_events WHERE alert_id = ? ORDER BY id",
            (alert_id,))
        return [dict(r) for r in rows]

    def firing_count(self) -> int:
        return self._db.connect().execute(
            "SELECT count(*) FROM alerts WHERE state = 'firing'").fetchone()[0]

    # -- people ----------------------------------------------------------------------------

    def acknowledge(self, alert_id: int, who: str) -> Alert:
        now = time.time()
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? "
                "WHERE id = ? AND state != 'resolved'", (who, now, alert_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no open alert with id {alert_id}")
            conn.execute("INSERT INTO alert_events(alert_id, at, event, actor) "
                         "VALUES (?, ?, 'acknowledged', ?)", (alert_id, now, who))
        return self.get(alert_id)

    def silence(self, *, author: str, duration: float, rule: str | None = None,
                subject: str = "*", comment: str = "") -> Silence:
        if not author:
            raise GpuwardenError("a silence needs an author")
        if duration <= 0:
            raise GpuwardenError("a silence needs a positive duration, e.g. 2h")
        now = time.time()
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO silences(rule, subject, author, comment, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (rule, subject or "*", author, comment, now,
                                              now + duration))
        return Silence(int(cur.lastrowid), rule, subject or "*", author, comment, now,
                       now + duration)

    def expire_silence(self, silence_id: int, who: str) -> None:
        now = time.time()
        with self._db.write() as conn:
            cur = conn.execute("UPDATE silences SET expires_at = ?, expired_by = ? "
                               "WHERE id = ? AND expires_at > ?", (now, who, silence_id, now))
        if cur.rowcount == 0:
            raise NotFoundError(f"no active silence with id {silence_id}")

    def silences(self, *, include_expired: bool = False) -> list[Silence]:
        sql = "SELECT * FROM silences"
        args: tuple[Any, ...] = ()
        if not include_expired:
            sql += " WHERE expires_at > ?"
            args = (time.time(),)
        rows = self._db.connect().execute(sql + " ORDER BY id", args).fetchall()
        return [Silence(r["id"], r["rule"], r["subject"], r["author"], r["comment"],
                        r["created_at"], r["expires_at"]) for r in rows]


def _with_silence(alert: Alert, silences: Sequence[Silence]) -> Alert:
    if any(s.matches(alert.rule, alert.subject) for s in silences):
        return Alert(**{**{f: getattr(alert, f) for f in Alert.__slots__}, "silenced": True})
    return alert
