"""Notifications through Apprise (Slack, Discord, e-mail, ntfy, webhooks...).

Every cycle's transitions become one message per target, written to an outbox in the state
database first; delivery then works the outbox: rate-limited per target, a failed delivery
is retried with backoff and counted, and nothing leaves the outbox until it is delivered.
Target URLs hold secrets: they are never stored, logged or shown; a target is known by its
position and a short hash of its URL.

Two kinds of recipient: the admins (``watchdog.notify``/``notify_file``, every alert) and a
job's owner (``owners``: the end-of-job report, reclaim's warnings).  An owner's outbox rows
are addressed ``owner:<user>`` and the URL is looked up from the configuration when the
message is delivered, so it is never stored either.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.alerts import Transition

log = logging.getLogger(__name__)

Sender = Callable[[str, str, str, str], bool]  # (url, title, body, kind) -> delivered


def apprise_sender(url: str, title: str, body: str, kind: str) -> bool:
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        log.error("a notification URL is not understood by Apprise; check watchdog.notify")
        return False
    notify_type = {"firing": apprise.NotifyType.FAILURE, "resolved": apprise.NotifyType.SUCCESS
                   }.get(kind, apprise.NotifyType.INFO)
    return bool(notifier.notify(title=title, body=body, notify_type=notify_type))


def target_id(index: int, url: str) -> str:
    return f"{index}:{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def format_message(transitions: Sequence[Transition]) -> tuple[str, str, str]:
    firing = [t for t in transitions if t.event == "firing"]
    resolved = [t for t in transitions if t.event == "resolved"]
    parts = []
    if firing:
        parts.append(f"{len(firing)} firing")
    if resolved:
        parts.append(f"{len(resolved)} resolved")
    title = "gpuwarden: " + ", ".join(parts)
    lines = []
    for t in firing + resolved:
        a = t.alert
        tag = f"[{t.event.upper()} {a.severity}]" if t.event == "firing" else "[RESOLVED]"
        lines.append(f"{tag} {a.summary} (rule {a.rule}, {a.subject})")
    return title, "\n".join(lines), "firing" if firing else "resolved"


@dataclass
class NotifyStats:
    enqueued: int = 0
    delivered: int = 0
    failures: int = 0
    pending: int = 0
    by_target: dict[str, int] = field(default_factory=dict)


OWNER = "owner:"


class Notifier:
    def __init__(self, db: StateDB, urls: Sequence[str], *, sender: Sender = apprise_sender,
                 owners: Callable[[str], str | None] | None = None,
                 rate_limit_per_minute: int = 20, max_backoff: float = 300.0) -> None:
        self._db = db
        self._targets = {target_id(i, u): u for i, u in enumerate(urls)}
        self._owners = owners
        self._send = sender
        self._rate = rate_limit_per_minute
        self._max_backoff = max_backoff
        self.stats = NotifyStats()

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def enqueue(self, transitions: Sequence[Transition], now: float) -> int:
        """One outbox message per target for this cycle's unsilenced transitions."""
        audible = [t for t in transitions if not t.alert.silenced]
        if not audible or not self._targets:
            return 0
        title, body, kind = format_message(audible)
        return self.message(title, body, kind, now)

    def _owner_url(self, user: str) -> str | None:
        if self._owners is None:
            return None
        try:
            return self._owners(user)
        except Exception as exc:  # an unreadable users_file must not stop the watchdog
            log.warning("owner %s: no notification URL (%s)", user, exc)
            return None

    def owner_reachable(self, user: str) -> bool:
        return bool(user) and self._owner_url(user) is not None

    def message(self, title: str, body: str, kind: str, now: float, *,
                users: Sequence[str] = (), admins: bool = True) -> int:
        """Queue one message for the admins (when ``admins``) and for each of ``users``
        that the owners mapping reaches; returns how many outbox rows were written."""
        if not self._targets_for(users, admins):
            return 0
        with self._db.write() as conn:
            return self.queue(conn, title, body, kind, now, users=users, admins=admins)

    def queue(self, conn: sqlite3.Connection, title: str, body: str, kind: str, now: float,
              *, users: Sequence[str] = (), admins: bool = True) -> int:
        """:meth:`message` inside the caller's write transaction (``StateDB.write()``), so a
        caller that records what it sent commits the record and the outbox rows at once."""
        targets = self._targets_for(users, admins)
        for target in targets:
            conn.execute(
                "INSERT INTO notifications(target, title, body, kind, created_at, status, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (target, title, body, kind, now, now))
        self.stats.enqueued += len(targets)
        return len(targets)

    def _targets_for(self, users: Sequence[str], admins: bool) -> list[str]:
        targets = list(self._targets) if admins else []
        return targets + [f"{OWNER}{u}" for u in dict.fromkeys(users)
                          if self.owner_reachable(u)]

    def _due_targets(self) -> dict[str, str]:
        """The admin targets plus every owner with a pending message whose URL the
        configuration still gives."""
        targets = dict(self._targets)
        rows = self._db.connect().execute(
            "SELECT DISTINCT target FROM notifications WHERE status = 'pending' "
            "AND target LIKE 'owner:%'").fetchall()
        for (target,) in rows:
            url = self._owner_url(target[len(OWNER):])
            if url is not None:
                targets[target] = url
        return targets

    def deliver(self, now: float) -> int:
        """Try every due message; returns how many were delivered.  Blocking (network): the
        watchdog runs it in a thread."""
        conn = self._db.connect()
        delivered = 0
        for target, url in self._due_targets().items():
            sent_last_minute = conn.execute(
                "SELECT count(*) FROM notifications WHERE target = ? AND status = 'sent' "
                "AND sent_at > ?", (target, now - 60)).fetchone()[0]
            budget = max(0, self._rate - sent_last_minute)
            due = conn.execute(
                "SELECT id, title, body, kind, attempts FROM notifications WHERE target = ? "
                "AND status = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                (target, now, budget)).fetchall()
            for row in due:
                try:
                    ok = self._send(url, row["title"], row["body"], row["kind"])
                    error = None if ok else "delivery refused or failed"
                except Exception as exc:  # a broken plugin must not stop the watchdog
                    ok, error = False, f"{type(exc).__name__}"
                with self._db.write() as w:
                    if ok:
                        w.execute("UPDATE notifications SET status = 'sent', sent_at = ?, "
                                  "attempts = attempts + 1 WHERE id = ?", (now, row["id"]))
                    else:
                        attempts = row["attempts"] + 1
                        backoff = min(self._max_backoff, 2.0 ** attempts)
                        w.execute("UPDATE notifications SET attempts = ?, last_error = ?, "
                                  "next_attempt_at = ? WHERE id = ?",
                                  (attempts, error, now + backoff, row["id"]))
                if ok:
                    delivered += 1
                    self.stats.delivered += 1
                else:
                    self.stats.failures += 1
                    self.stats.by_target[target] = self.stats.by_target.get(target, 0) + 1
                    log.warning("notification %d to target %s failed (attempt %d): %s; "
                                "will retry", row["id"], target, row["attempts"] + 1, error)
                    break  # keep this target's messages in order: retry the oldest first
        self.stats.pending = conn.execute(
            "SELECT count(*) FROM notifications WHERE status = 'pending'").fetchone()[0]
        return delivered
