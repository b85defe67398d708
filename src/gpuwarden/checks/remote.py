"""The control plane's side of a check run: ask a node daemon to run its checks, compare
what must be equal across the cluster, and read and change the node's place in Slurm
through the controller's daemon.  Shared by the burn-in at ``up`` and ``services.checks``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gpuwarden.checks import nccl
from gpuwarden.checks.active import nccl_expected
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
    gpus: int = 0  # the GPUs Slurm has configured on it (its gres)
    partitions: tuple[str, ...] = ()  # the partitions it belongs to


async def slurm_places(controller: NodeClient) -> dict[str, SlurmPlace]:
    """Every Slurm node's DRAIN flag, reason, state, GPUs and partitions, from the
    controller's daemon."""
    from gpuwarden.gpu.wire import SnapshotRefused
    from gpuwarden.slurm.wire import decode_nodes

    try:
        nodes = decode_nodes(await controller.request("GET", "/api/v1/slurm/nodes"))
    except SnapshotRefused as exc:
        raise NodeError(f"the controller's Slurm node list is malformed: {exc.reason}") from None
    return {n.name: SlurmPlace("DRAIN" in n.flags, n.reason, n.state, n.gpus_total,
                               n.partitions) for n in nodes}


# srun's words when --immediate gives up or the nodes cannot be allocated at all
_NOT_FREE = ("Unable to allocate resources", "Immediate execution impossible",
             "Requested nodes are busy", "Requested node configuration is not available")


async def cross_node_nccl(controller: NodeClient, spec: CheckSpec, nodes: Sequence[str],
                          gpus_per_node: int, holder: int | None = None, *,
                          gres: bool = True) -> dict[str, CheckResult]:
    """The ``nccl`` check across ``nodes`` (two or more): one all-reduce over every GPU of
    them as a Slurm step from the controller's daemon (inside the ``holder`` job when one
    holds them; ``gres``: ask Slurm for the GPUs, where it has them configured).  A run that
    fails on more than two nodes is repeated pairwise around the
    ring to find the node to blame: a node whose pairs all fail gets the check's severity,
    a node with a pair that passed passes, any other gets ``warn``; when no single node can
    be blamed (two nodes, or every pair fails alike) each gets ``warn``, so nothing is
    drained on a guess.  A step that never started (no nccl-tests header: srun's failure,
    the holder gone, the nodes busy) is a skip, never evidence.  Bandwidth is judged against
    ``threshold_across`` (the network's figure, not the one inside a node)."""
    where = f"{len(nodes)} nodes x {gpus_per_node} GPUs"
    expected = nccl_expected(spec.threshold_across, "threshold_across")

    def result(verdict: str, figure: str, value: float | None = None) -> CheckResult:
        return CheckResult(spec.name, spec.level, verdict, figure[:500],  # type: ignore[arg-type]
                           expected, spec.description, value)

    async def once(group: Sequence[str]) -> tuple[str, bool, str, float | None]:
        """(outcome: ran | skipped, ok, figure, GB/s) of one step over ``group``."""
        try:
            answer = await controller.request("POST", "/api/v1/slurm/nccl", {
                "nodes": list(group), "gpus_per_node": gpus_per_node, "job_id": holder,
                "mpi": spec.mpi, "gres": gres and holder is None})
        except NodeError as exc:
            return "skipped", False, f"skipped: the controller's daemon failed ({exc})", None
        if isinstance(answer, dict) and isinstance(answer.get("skipped"), str):
            return "skipped", False, answer["skipped"], None
        code = answer.get("exit") if isinstance(answer, dict) else None
        text = answer.get("output") if isinstance(answer, dict) else None
        if not isinstance(code, int) or not isinstance(text, str):
            return "skipped", False, "skipped: the controller's daemon answered no result", None
        run = nccl.parse(text)
        if run is None and code != 0 and not nccl.started(text):
            # the test never began: srun's or the launch's failure, no evidence of NCCL's
            last = text.strip().splitlines()[-1][:200] if text.strip() else f"exit {code}"
            if any(words in text for words in _NOT_FREE):
                return "skipped", False, ("skipped: the nodes were not free for a cross-node "
                                          f"run ({last})"), None
            if "No such file or directory" in text and "all_reduce_perf" in text:
                host = text.rsplit(" on ", 1)[-1].split()[0] if " on " in text else "a node"
                return "skipped", False, f"skipped: all_reduce_perf not installed on {host}", None
            return "skipped", False, f"skipped: the step did not start ({last})", None
        ok, figure, bandwidth = nccl.judge(run, code, text, ranks=len(group) * gpus_per_node,
                                           threshold=spec.threshold_across,
                                           where=f"{len(group)} nodes x {gpus_per_node} GPUs")
        return "ran", ok, figure, bandwidth

    outcome, ok, figure, bandwidth = await once(nodes)
    if outcome == "skipped":
        return {n: result("skip", figure) for n in nodes}
    if ok:
        return {n: result("pass", figure, bandwidth) for n in nodes}
    pairs = nccl.ring_pairs(nodes)
    pair_runs = {pair: await once(pair) for pair in pairs}
    pair_ok = {pair: r[1] for pair, r in pair_runs.items() if r[0] == "ran"}
    bad = nccl.blame(nodes, pair_ok)
    if not bad:
        why = ("every pair passes: the fault is in the whole, not one node" if pair_ok and
               all(pair_ok.values()) else "no single node can be blamed"
               if pairs else "two nodes: which one cannot be told (check with a third)")
        return {n: result("warn", f"{figure}; {why}", bandwidth) for n in nodes}
    out = {}
    for n in nodes:
        mine = [r for pair, r in pair_runs.items() if n in pair]
        figures = "; ".join(f"with {b if a == n else a}: {r[2]}"
                            for (a, b), r in pair_runs.items() if n in (a, b))
        values = [r[3] for r in mine if r[3] is not None]
        if n in bad:
            out[n] = result(spec.severity, f"{figure}; {figures}",
                            min(values, default=None))
        elif any(pair_ok.get(pair) for pair in pair_runs if n in pair):
            out[n] = result("pass", f"{where} failed, not on this node; {figures}",
                            max(values, default=None))
        else:  # no pair with it ran and passed: nothing clears it either
            out[n] = result("warn", f"{where} failed; {figures}", max(values, default=None))
    return out
