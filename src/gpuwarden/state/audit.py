"""The audit log: who did what to what, and how it went.  Every action the control plane
takes or proposes (watchdog policies, API calls, the agent) is written here."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuwarden.state.db import StateDB


class AuditLog:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def write(self, actor: str, action: str, target: str, outcome: str,
              **detail: Any) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO audit_log(at, actor, action, target, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), actor, action, target, outcome,
                 json.dumps(detail, sort_keys=True, default=str)))

    def list(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._db.connect().execute(
            "SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
