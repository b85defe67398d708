"""The lifecycle's records: the saved cluster description (so ``down`` works after a crash)
and the inventory rows of provider nodes (kept by :class:`Inventory`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.providers.base import NodeRecord, Workspace
from gpuwarden.providers.spec import ClusterDescription
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory


def home_of(db: StateDB) -> Path:
    """``$GPUWARDEN_HOME``: the state database lives at its top."""
    return db.path.parent


def save_description(ws: Workspace, spec: ClusterDescription) -> None:
    """Write the description before anything is created, atomically."""
    ws.directory.mkdir(parents=True, exist_ok=True)
    tmp = ws.description_file.with_suffix(".tmp")
    tmp.write_text(spec.model_dump_json(indent=2))
    os.replace(tmp, ws.description_file)


def load_saved(home: Path, name: str) -> ClusterDescription:
    ws = Workspace(home, name)
    try:
        data = json.loads(ws.description_file.read_text())
    except FileNotFoundError:
        known = ", ".join(saved_clusters(home)) or "none"
        raise NotFoundError(f"no cluster named {name!r} (known: {known}); "
                            "bring one up with `gpuwarden up CLUSTER.yaml`") from None
    return ClusterDescription.model_validate(data)


def saved_clusters(home: Path) -> list[str]:
    root = home / "clusters"
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/cluster.json"))


def forget(ws: Workspace) -> None:
    """Remove the cluster's local files (after a complete ``down``)."""
    shutil.rmtree(ws.directory, ignore_errors=True)


def check_not_taken(db: StateDB, spec: ClusterDescription) -> None:
    """A cluster name already used by another provider (or the config file) is refused."""
    row = db.connect().execute("SELECT provider FROM clusters WHERE name = ?",
                               (spec.name,)).fetchone()
    if row is None:
        return
    config_nodes = db.connect().execute(
        "SELECT COUNT(*) FROM nodes WHERE cluster = ? AND source = 'config'",
        (spec.name,)).fetchone()[0]
    if config_nodes or row["provider"] not in (spec.provider, "static"):
        raise GpuwardenError(f"name: cluster {spec.name!r} already exists (provider "
                             f"{row['provider']}); pick another name or "
                             f"`gpuwarden down {spec.name}` first")


def upsert_provider_nodes(db: StateDB, cluster: str, provider: str,
                          nodes: Sequence[NodeRecord]) -> None:
    Inventory(db).upsert_provider_nodes(cluster, provider, nodes)


def remove_provider_cluster(db: StateDB, cluster: str) -> list[str]:
    return Inventory(db).remove_cluster(cluster, "provider")
