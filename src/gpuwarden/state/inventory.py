"""Clusters and nodes, the scrape targets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.config import NodeConfig
from gpuwarden.state.db import StateDB


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    cluster: str
    url: str
    token_file: Path | None
    role: str
    provider: str
    cost_per_hour: float
    source: str


class Inventory:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def sync_config(self, cluster: str, nodes: list[NodeConfig]) -> None:
        """Make the config file's nodes the inventory's ``config`` nodes (providers' nodes
        are left alone)."""
        now = time.time()
        with self._db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO clusters(name, created_at) VALUES (?, ?)",
                         (cluster, now))
            names = [n.name for n in nodes]
            conn.execute(
                f"DELETE FROM nodes WHERE source = 'config' AND name NOT IN "
                f"({','.join('?' * len(names))})",
                names,
            )
            for n in nodes:
                conn.execute(
                    """INSERT INTO nodes(name, cluster, url, token_file, role, provider,
                                         cost_per_hour, source, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, 'config', ?)
                       ON CONFLICT(name) DO UPDATE SET cluster=excluded.cluster,
                         url=excluded.url, token_file=excluded.token_file, role=excluded.role,
                         provider=excluded.provider, cost_per_hour=excluded.cost_per_hour,
                         source='config', updated_at=excluded.updated_at""",
                    (n.name, cluster, n.url, str(n.token_file) if n.token_file else None,
                     n.role, n.provider, n.cost_per_hour, now),
                )

    def nodes(self) -> list[Node]:
        rows = self._db.connect().execute("SELECT * FROM nodes ORDER BY name").fetchall()
        return [
            Node(r["name"], r["cluster"], r["url"],
                 Path(r["token_file"]) if r["token_file"] else None, r["role"], r["provider"],
                 r["cost_per_hour"], r["source"])
            for r in rows
        ]

    def clusters(self) -> list[str]:
        return [r[0] for r in self._db.connect().execute("SELECT name FROM clusters ORDER BY name")]
