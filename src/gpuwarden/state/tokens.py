"""API tokens with roles (viewer < operator < admin), stored as SHA-256 hashes.

Tokens are 256-bit random strings, so a fast hash is enough (there is nothing to guess);
the plain token is shown once, at creation, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass

from gpuwarden.errors import GpuwardenError
from gpuwarden.state.db import StateDB

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
PREFIX = "gw_"
log = logging.getLogger(__name__)


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked: bool


class TokenStore:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._last_touch: dict[int, float] = {}

    def create(self, role: str, name: str = "") -> str:
        if role not in ROLES:
            raise GpuwardenError(f"--role {role!r} is not a role; use one of: {', '.join(ROLES)}")
        token = PREFIX + secrets.token_urlsafe(32)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO api_tokens(name, role, token_hash, prefix, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name or f"{role} token", role, _hash(token), token[:7], time.time()),
            )
        return token

    def ensure_admin(self) -> str | None:
        """Create the first admin token when there is none; returns it (to be shown once)."""
        row = self._db.connect().execute(
            "SELECT 1 FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL").fetchone()
        if row is not None:
            return None
        return self.create("admin", "initial admin token")

    def delete_named(self, name: str) -> int:
        """Remove every token called ``name`` (revoked or not); how many there were.
        ``serve`` replaces its local CLI token this way at each start, so they do not pile
        up in ``token list``."""
        with self._db.write() as conn:
            return conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount

    def find(self, token: str) -> Principal | None:
        """Who an active token is, without counting this as a use (``authenticate`` does)."""
        if not token.startswith(PREFIX):
            return None
        row = self._db.connect().execute(
            "SELECT id, name, role FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
            (_hash(token),),
        ).fetchone()
        return None if row is None else Principal(row["id"], row["name"], row["role"])

    def authenticate(self, token: str) -> Principal | None:
        who = self.find(token)
        if who is None:
            return None
        now = time.time()
        if now - self._last_touch.get(who.token_id, 0) > 60:  # at most one write a minute
            self._last_touch[who.token_id] = now
            try:
                with self._db.write() as conn:
                    conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                                 (now, who.token_id))
            except sqlite3.OperationalError as exc:  # best effort: a full disk, a busy lock
                log.warning("token %d: last_used_at not recorded (%s)", who.token_id, exc)
        return who

    def list(self) -> list[TokenInfo]:
        rows = self._db.connect().execute("SELECT * FROM api_tokens ORDER BY id").fetchall()
        return [TokenInfo(r["id"], r["name"], r["role"], r["prefix"], r["created_at"],
                          r["last_used_at"], r["revoked_at"] is not None) for r in rows]

    def revoke(self, token_id: int) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id))
        return cur.rowcount > 0
