"""Stored job summaries: one row per GPU job that ended, written once, kept for the
configured retention.  The report is kept whole as JSON; the figures the efficiency report
sums (GPU-hours, utilization, $) are columns, so a week of 10,000 jobs is one GROUP BY."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from gpuwarden.state.db import StateDB

GroupBy = Literal["user", "account", "partition"]
_COLUMNS = ("user", "account", "partition", "state", "start_time", "end_time", "elapsed_s",
            "gpus", "gpu_hours", "mean_utilization", "cost", "wasted")


class JobReportStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def write(self):  # -> the state database's write transaction
        return self._db.write()

    @staticmethod
    def put(conn: sqlite3.Connection, cluster: str, job_id: int, figures: Mapping[str, Any],
            report: Mapping[str, Any], stored_at: float) -> bool:
        """Store one job's summary inside the caller's transaction; False when the job has
        one already (the first stays: a summary is written once)."""
        values = [figures.get(c) for c in _COLUMNS]
        cursor = conn.execute(
            f"INSERT INTO job_reports(cluster, job_id, {', '.join(_COLUMNS)}, report, "
            f"stored_at) VALUES ({', '.join('?' * (len(_COLUMNS) + 4))}) "
            "ON CONFLICT(cluster, job_id) DO NOTHING",
            (cluster, job_id, *values, json.dumps(report, separators=(",", ":")), stored_at))
        return cursor.rowcount == 1

    @staticmethod
    def set_message(conn: sqlite3.Connection, cluster: str, job_id: int, message: str) -> None:
        conn.execute("UPDATE job_reports SET message = ? WHERE cluster = ? AND job_id = ?",
                     (message, cluster, job_id))

    def get(self, cluster: str, job_id: int) -> dict[str, Any] | None:
        """The stored report (with ``stored_at``), or None."""
        row = self._db.connect().execute(
            "SELECT report, stored_at FROM job_reports WHERE cluster = ? AND job_id = ?",
            (cluster, job_id)).fetchone()
        if row is None:
            return None
        return {**json.loads(row["report"]), "stored_at": row["stored_at"]}

    def message(self, cluster: str, job_id: int) -> str | None:
        row = self._db.connect().execute(
            "SELECT message FROM job_reports WHERE cluster = ? AND job_id = ?",
            (cluster, job_id)).fetchone()
        return row["message"] if row is not None else None

    def first_stored(self, cluster: str) -> float | None:
        """When the oldest summary kept was stored: since when these reports have watched
        the cluster (None: nothing stored yet)."""
        row = self._db.connect().execute(
            "SELECT MIN(stored_at) FROM job_reports WHERE cluster = ?", (cluster,)).fetchone()
        return row[0] if row is not None else None

    def stored_ids(self, cluster: str, ended_since: float) -> set[int]:
        """Ids of the jobs with a summary that ended at or after ``ended_since``."""
        rows = self._db.connect().execute(
            "SELECT job_id FROM job_reports WHERE cluster = ? AND end_time >= ?",
            (cluster, ended_since)).fetchall()
        return {r[0] for r in rows}

    def reports(self, cluster: str, *, since: float, until: float, user: str | None = None,
                job_ids: Iterable[int] = ()) -> list[dict[str, Any]]:
        """Stored reports of jobs that ended in [since, until] (of ``user``, or with one of
        ``job_ids``), oldest first."""
        sql = ("SELECT report, stored_at FROM job_reports WHERE cluster = ? AND end_time >= ? "
               "AND end_time <= ?")
        args: list[Any] = [cluster, since, until]
        ids = sorted(set(job_ids))
        if user is not None:
            sql += " AND user = ?"
            args.append(user)
        if ids:
            sql += f" AND job_id IN ({', '.join('?' * len(ids))})"
            args += ids
        rows = self._db.connect().execute(sql + " ORDER BY end_time", args).fetchall()
        return [{**json.loads(r["report"]), "stored_at": r["stored_at"]} for r in rows]

    def totals(self, cluster: str, *, since: float, until: float,
               by: GroupBy) -> list[dict[str, Any]]:
        """Per ``by`` value: jobs, GPU-hours, GPU-hour-weighted utilization, $ and $ wasted,
        most GPU-hours first."""
        if by not in ("user", "account", "partition"):
            raise ValueError(f"by {by!r}: use user, account or partition")
        rows = self._db.connect().execute(
            f"SELECT {by} AS key, count(*) AS jobs, sum(gpu_hours) AS gpu_hours, "
            "sum(CASE WHEN mean_utilization IS NOT NULL THEN mean_utilization * gpu_hours END)"
            " AS util_hours, "
            "sum(CASE WHEN mean_utilization IS NOT NULL THEN gpu_hours END) AS measured_hours, "
            "sum(cost) AS cost, sum(wasted) AS wasted FROM job_reports "
            "WHERE cluster = ? AND end_time >= ? AND end_time <= ? "
            f"GROUP BY {by} ORDER BY gpu_hours DESC, key", (cluster, since, until)).fetchall()
        return [dict(r) for r in rows]

    def prune(self, before: float) -> int:
        """Forget summaries of jobs that ended before ``before``; returns how many."""
        with self._db.write() as conn:
            return conn.execute("DELETE FROM job_reports WHERE end_time < ?",
                                (before,)).rowcount
