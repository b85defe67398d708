"""Clusters and nodes, the scrape targets."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    status: str = "RUNNING"  # STOPPED: stopped on purpose (autostop), not scraped


class NodeRow(Protocol):
    """What a provider reports of a node (``gpuwarden.providers.base.NodeRecord``)."""

    name: str
    url: str | None
    token_file: Path | None
    role: str
    cost_per_hour: float


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
                _upsert_node(conn, n, cluster, n.provider, "config", now)

    def nodes(self) -> list[Node]:
        rows = self._db.connect().execute("SELECT * FROM nodes ORDER BY name").fetchall()
        return [
            Node(r["name"], r["cluster"], r["url"],
                 Path(r["token_file"]) if r["token_file"] else None, r["role"], r["provider"],
                 r["cost_per_hour"], r["source"], r["status"])
            for r in rows
        ]

    def clusters_with(self, source: str) -> list[str]:
        """The clusters holding nodes of ``source`` (``provider``: made by `gpuwarden up`),
        without reading every node (reclaim asks each cycle)."""
        return [r[0] for r in self._db.connect().execute(
            "SELECT DISTINCT cluster FROM nodes WHERE source = ? ORDER BY cluster", (source,))]

    def clusters(self) -> list[str]:
        return [r[0] for r in self._db.connect().execute("SELECT name FROM clusters ORDER BY name")]

    def upsert_provider_nodes(self, cluster: str, provider: str, nodes: Iterable[NodeRow]
                              ) -> None:
        """Make ``nodes`` the cluster's provider-made inventory rows (others removed)."""
        nodes = list(nodes)
        now = time.time()
        with self._db.write() as conn:
            conn.execute("""INSERT INTO clusters(name, provider, created_at) VALUES (?, ?, ?)
                            ON CONFLICT(name) DO UPDATE SET provider = excluded.provider""",
                         (cluster, provider, now))
            names = [n.name for n in nodes]
            conn.execute(
                f"DELETE FROM nodes WHERE cluster = ? AND source = 'provider' AND name NOT IN "
                f"({','.join('?' * len(names))})", (cluster, *names))
            for n in nodes:
                if n.url is not None:
                    _upsert_node(conn, n, cluster, provider, "provider", now)

    def remove_cluster(self, cluster: str, source: str = "provider") -> list[str]:
        """Drop the cluster's nodes of ``source`` (and the cluster when nothing is left)."""
        with self._db.write() as conn:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM nodes WHERE cluster = ? AND source = ? ORDER BY name",
                (cluster, source))]
            conn.execute("DELETE FROM nodes WHERE cluster = ? AND source = ?", (cluster, source))
            left = conn.execute("SELECT COUNT(*) FROM nodes WHERE cluster = ?",
                                (cluster,)).fetchone()[0]
            if not left:
                conn.execute("DELETE FROM clusters WHERE name = ?", (cluster,))
        return names


def _upsert_node(conn: Any, n: NodeRow, cluster: str, provider: str, source: str,
                 now: float) -> None:
    conn.execute(
        """INSERT INTO nodes(name, cluster, url, token_file, role, provider, cost_per_hour,
                             source, updated_at, status)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(name) DO UPDATE SET cluster=excluded.cluster, url=excluded.url,
             token_file=excluded.token_file, role=excluded.role, provider=excluded.provider,
             cost_per_hour=excluded.cost_per_hour, source=excluded.source,
             updated_at=excluded.updated_at, status=excluded.status""",
        (n.name, cluster, n.url, str(n.token_file) if n.token_file else None, n.role,
         provider, n.cost_per_hour, source, now,
         "STOPPED" if getattr(n, "status", None) == "STOPPED" else "RUNNING"))
