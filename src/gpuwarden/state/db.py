"""SQLite state database with ordered migrations.  WAL, one connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # 1: inventory and API tokens
    """
    CREATE TABLE clusters (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL DEFAULT 'static',
        created_at REAL NOT NULL
    );
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        cluster TEXT NOT NULL REFERENCES clusters(name),
        url TEXT NOT NULL,
        token_file TEXT,
        role TEXT NOT NULL DEFAULT 'worker',
        provider TEXT NOT NULL DEFAULT 'static',
        cost_per_hour REAL NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'config',
        updated_at REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        token_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    );
    """,
    # 2: watchdog: alerts and their history, silences, the notification outbox, actions,
    # and the audit log
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
        summary TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL,
        started_at REAL NOT NULL,
        fired_at REAL,
        resolved_at REAL,
        last_true_at REAL NOT NULL,
        acknowledged_by TEXT,
        acknowledged_at REAL
    );
    CREATE UNIQUE INDEX alerts_open ON alerts(rule, subject) WHERE state != 'resolved';
    CREATE INDEX alerts_state ON alerts(state, fired_at);
    CREATE TABLE alert_events (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        at REAL NOT NULL,
        event TEXT NOT NULL,
        actor TEXT,
        detail TEXT
    );
    CREATE INDEX alert_events_alert ON alert_events(alert_id);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        rule TEXT,
        subject TEXT NOT NULL DEFAULT '*',
        author TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        expired_by TEXT
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at REAL NOT NULL,
        sent_at REAL
    );
    CREATE INDEX notifications_due ON notifications(status, next_attempt_at);
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER REFERENCES alerts(id),
        policy TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        args TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        proposed_at REAL NOT NULL,
        decided_by TEXT,
        decided_at REAL,
        result TEXT
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 3: ops agent runs and the actions they propose (each bound to its exact arguments)
    """
    CREATE TABLE agent_runs (
        id TEXT PRIMARY KEY,
        created_by TEXT NOT NULL,
        prompt TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'awaiting_approval', 'done',
                                                'failed')),
        mode TEXT NOT NULL,
        answer TEXT NOT NULL DEFAULT '',
        messages TEXT NOT NULL DEFAULT '[]',
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        requests INTEGER NOT NULL DEFAULT 0,
        cost REAL,
        error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE agent_calls (
        run_id TEXT NOT NULL REFERENCES agent_runs(id),
        call_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        args TEXT NOT NULL,
        digest TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('proposed', 'approved', 'denied', 'executed',
                                             'failed', 'rejected')),
        decided_by TEXT,
        decided_at REAL,
        result TEXT,
        PRIMARY KEY (run_id, call_id)
    );
    """,
    # 4: reclaim: each watched job's place on the warning ladder, what reclaim did (and what
    # each action saves), and its pause switch
    """
    CREATE TABLE reclaim_items (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('job', 'node')),
        owner TEXT NOT NULL DEFAULT '',
        idle_since REAL,
        stage INTEGER NOT NULL DEFAULT 0,
        last_warned_at REAL,
        action_id INTEGER REFERENCES actions(id),
        exempt_by TEXT,
        note TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE reclaim_events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        event TEXT NOT NULL,
        mode TEXT NOT NULL,
        detail TEXT NOT NULL,
        rate_per_hour REAL,
        saved_from REAL,
        saved_until REAL
    );
    CREATE INDEX reclaim_events_key ON reclaim_events(key, id);
    CREATE INDEX reclaim_events_saved ON reclaim_events(saved_until);
    CREATE TABLE reclaim_switch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        paused_by TEXT,
        paused_at REAL,
        reason TEXT
    );
    """,
    # 5: per-job reports: the summary of each GPU job, stored when it ends (the report
    # itself as JSON, the figures the efficiency report sums as columns), and whether its
    # end-of-job message was queued (in the same transaction: once, across restarts)
    """
    CREATE TABLE job_reports (
        cluster TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        user TEXT NOT NULL DEFAULT '',
        account TEXT NOT NULL DEFAULT '',
        partition TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        start_time REAL,
        end_time REAL NOT NULL,
        elapsed_s REAL NOT NULL,
        gpus INTEGER NOT NULL,
        gpu_hours REAL NOT NULL,
        mean_utilization REAL,
        cost REAL NOT NULL,
        wasted REAL NOT NULL,
        report TEXT NOT NULL,
        stored_at REAL NOT NULL,
        message TEXT,
        PRIMARY KEY (cluster, job_id)
    );
    CREATE INDEX job_reports_end ON job_reports(end_time);
    """,
    # 6: a provider's node can be stopped on purpose (autostop): it stays in the inventory,
    # is not scraped and costs nothing meanwhile
    """
    ALTER TABLE nodes ADD COLUMN status TEXT NOT NULL DEFAULT 'RUNNING';
    """,
    # 7: node health checks: one row per check per run (figure and expected value as the
    # node measured them), so the last result and its history are one query; a run's rows
    # share its id, and retention deletes whole runs
    """
    CREATE TABLE check_runs (
        id INTEGER PRIMARY KEY,
        node TEXT NOT NULL,
        level TEXT NOT NULL,
        trigger TEXT NOT NULL,
        at REAL NOT NULL,
        verdict TEXT NOT NULL,
        error TEXT
    );
    CREATE INDEX check_runs_node ON check_runs(node, at);
    CREATE TABLE check_results (
        run_id INTEGER NOT NULL REFERENCES check_runs(id) ON DELETE CASCADE,
        node TEXT NOT NULL,
        name TEXT NOT NULL,
        level TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'warn', 'fail', 'skip')),
        figure TEXT NOT NULL,
        expected TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        value REAL,
        at REAL NOT NULL
    );
    CREATE INDEX check_results_node ON check_results(node, name, at);
    """,
)


class StateDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._migrate()

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def write(self):  # -> context manager holding a transaction
        return _Transaction(self.connect(), self._write_lock)

    def _migrate(self) -> None:
        conn = self.connect()
        with self.write():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _Transaction:
    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()
