"""The control plane's side of a check run: ask a node daemon to run its checks, compare
what must be equal across the cluster, and read and change the node's place in Slurm
through the controller's daemon.  Shared by the burn-in at ``up`` and ``services.checks``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpuwarden.checks.model import CheckResult, Expectation
from gpuwarden.checks.spec import CheckSpec
from gpuwarden.nodeclient import NodeClient, NodeError


async def ask_node(client: NodeClient, level: str, expect: Expectation,
                   overrides: Mapping[str, Any] | None = None) -> list[CheckResult]:
    """The node's results (``POST /api/v1/checks``); NodeError when it fails or answers
    something that is not a list of results."""
    body = await client.request("POST", "/api/v1/checks", {
        "level": level, "expect": {"gpus": expect.gpus, "model": expect.model,
                                    "xids_since": expect.xids_since},
        "checks": dict(overrides or {})})
    items = body.get("results") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise NodeError("the node's check answer has no results list")
    try:
        return [CheckResult.from_json(r, f"results[{i}]") for i, r in enumerate(items)]
    except ValueError as exc:
        raise NodeError(f"the node's check answer is malformed: {exc}") from None


def compare_versions(checks: Sequence[CheckSpec],
                     by_node: Mapping[str, Sequence[CheckResult]],
                     others: Mapping[str, str] | None = None) -> dict[str, list[CheckResult]]:
    """Judge the ``versions`` checks' results (each node sends its own figure) against the
    most common figure of the cluster, counting ``others`` (node -> its last figure) too: a
    node that differs gets the check's severity, the most common figure as expected."""
    severity = {c.name: c.severity for c in checks if c.kind == "versions"}
    figures = dict(others or {})
    for node, results in by_node.items():
        for r in results:
            if r.name in severity and r.verdict != "skip":
                figures[node] = r.figure
    if not figures:
        return {n: list(rs) for n, rs in by_node.items()}
    common, _ = Counter(figures.values()).most_common(1)[0]
    return {node: [replace(r, verdict="pass" if r.figure == common else severity[r.name],
                           expected=common)
                   if r.name in severity and r.verdict != "skip" else r for r in results]
            for node, results in by_node.items()}


@dataclass(frozen=True, slots=True)
class SlurmPlace:
    drained: bool
    reason: str
    state: str


async def slurm_places(controller: NodeClient) -> dict[str, SlurmPlace]:
    """Every Slurm node's DRAIN flag, reason and state, from the controller's daemon."""
    nodes = await controller.request("GET", "/api/v1/slurm/nodes")
    if not isinstance(nodes, list):
        raise NodeError("the controller's Slurm node list is not a list")
    return {n["name"]: SlurmPlace("DRAIN" in (n.get("flags") or []), n.get("reason") or "",
                                  n.get("state") or "") for n in nodes if isinstance(n, dict)}
