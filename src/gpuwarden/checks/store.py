"""Check results in the state database (migration 7): every run with its results, the last
result of every check of a node, its history, and retention by age."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpuwarden.checks.model import CheckResult
from gpuwarden.state.db import StateDB

_RANK = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}
RETENTION_S = 30 * 86400.0


def overall(results: Sequence[CheckResult]) -> str:
    """A run's verdict: its worst result (skipped checks count as passed)."""
    worst = max((_RANK[r.verdict] for r in results), default=0)
    return ("pass", "warn", "fail")[worst]


@dataclass(frozen=True, slots=True)
class StoredRun:
    id: int
    node: str
    level: str
    trigger: str  # burn-in | on-demand
    at: float
    verdict: str  # pass | warn | fail | error (the node did not answer)
    error: str | None
    results: tuple[CheckResult, ...]


class CheckStore:
    def __init__(self, db: StateDB, clock: Callable[[], float] = time.time,
                 retention_s: float = RETENTION_S) -> None:
        self._db = db
        self._clock = clock
        self._retention_s = retention_s

    def record(self, node: str, level: str, trigger: str, results: Sequence[CheckResult],
               error: str | None = None) -> StoredRun:
        """Store one run (and drop runs older than the retention, in the same write)."""
        now = self._clock()
        verdict = "error" if error is not None else overall(results)
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO check_runs(node, level, trigger, at, verdict, error) "
                "VALUES (?, ?, ?, ?, ?, ?)", (node, level, trigger, now, verdict, error))
            run_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO check_results(run_id, node, name, level, verdict, figure, "
                "expected, description, value, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, node, r.name, r.level, r.verdict, r.figure, r.expected,
                  r.description, r.value, now) for r in results])
            old = now - self._retention_s
            conn.execute("DELETE FROM check_results WHERE at < ?", (old,))
            conn.execute("DELETE FROM check_runs WHERE at < ?", (old,))
        return StoredRun(run_id, node, level, trigger, now, verdict, error, tuple(results))

    def runs(self, node: str, limit: int = 20) -> list[StoredRun]:
        """The node's latest runs, newest first, each with its results."""
        conn = self._db.connect()
        rows = conn.execute("SELECT * FROM check_runs WHERE node = ? ORDER BY at DESC, id DESC "
                            "LIMIT ?", (node, limit)).fetchall()
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        by_run: dict[int, list[CheckResult]] = {i: [] for i in ids}
        for r in conn.execute(
                f"SELECT * FROM check_results WHERE run_id IN ({','.join('?' * len(ids))}) "
                "ORDER BY rowid", ids):
            by_run[r["run_id"]].append(_result(r))
        return [StoredRun(r["id"], r["node"], r["level"], r["trigger"], r["at"], r["verdict"],
                          r["error"], tuple(by_run[r["id"]])) for r in rows]

    def latest(self, node: str) -> dict[str, tuple[float, CheckResult]]:
        """The last result of every check the node has run: name -> (when, result)."""
        rows = self._db.connect().execute(
            "SELECT r.* FROM check_results r JOIN (SELECT name, MAX(at) AS at FROM "
            "check_results WHERE node = ? GROUP BY name) m ON r.name = m.name AND r.at = m.at "
            "WHERE r.node = ? ORDER BY r.rowid", (node, node)).fetchall()
        return {r["name"]: (r["at"], _result(r)) for r in rows}

    def last_runs(self) -> dict[str, StoredRun]:
        """Every node's last run (without its results): the Overview's counts."""
        rows = self._db.connect().execute(
            "SELECT c.* FROM check_runs c JOIN (SELECT node, MAX(id) AS id FROM check_runs "
            "GROUP BY node) m ON c.id = m.id").fetchall()
        return {r["node"]: StoredRun(r["id"], r["node"], r["level"], r["trigger"], r["at"],
                                     r["verdict"], r["error"], ()) for r in rows}

    def run_times(self) -> dict[str, tuple[float | None, float | None]]:
        """Every node's last judged run (any but ``error``) and last passing run (pass or
        warn): node -> (judged at, passed at), None where there is none.  The XID checks
        judge XIDs since the first; a hardware XID alert stays firing until the second."""
        rows = self._db.connect().execute(
            "SELECT node, MAX(CASE WHEN verdict != 'error' THEN at END) AS judged, "
            "MAX(CASE WHEN verdict IN ('pass', 'warn') THEN at END) AS passed "
            "FROM check_runs GROUP BY node").fetchall()
        return {r["node"]: (r["judged"], r["passed"]) for r in rows}


def _result(row) -> CheckResult:  # a check_results row
    return CheckResult(row["name"], row["level"], row["verdict"], row["figure"],
                       row["expected"], row["description"], row["value"])
