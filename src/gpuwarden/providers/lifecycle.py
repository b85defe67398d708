"""``up``, ``status`` and ``down``, and ``stop_node`` / ``start_node`` / ``replace_node``
for one node: drive a provider and record the result in the control plane's state
database.  Usable by the CLI, the API, the watchdog and the reclaim engine alike."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.providers.base import (
    GONE_STATES,
    RUNNING,
    Clock,
    ClusterReport,
    DownReport,
    NodeRecord,
    Progress,
    Provider,
    ProviderError,
    SystemClock,
    Workspace,
    no_progress,
)
from gpuwarden.providers.registry import (
    check_not_taken,
    forget,
    home_of,
    load_saved,
    remove_provider_cluster,
    save_description,
    saved_clusters,
    upsert_provider_nodes,
)
from gpuwarden.providers.spec import ClusterDescription, cannot_stop
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB

# a node in one of these states runs (or is about to): a controller stop waits for them
_UP_STATES = frozenset({RUNNING, "PROVISIONING", "STARTING"})


@dataclass
class Runtime:
    """The collaborators a lifecycle call uses; tests replace any of them."""

    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))
    clock: Clock = field(default_factory=SystemClock)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    runpod_base_url: str | None = None
    runpod_node_url: str | None = None
    runpod_poll_s: float | None = None
    start_timeout_s: float | None = None


def open_provider(spec: ClusterDescription, home: Path, rt: Runtime) -> Provider:
    """The provider for ``spec`` (imports only what that provider needs)."""
    if spec.provider == "local":
        from gpuwarden.providers.local import LocalProvider

        local = LocalProvider(home, rt.http, rt.clock)
        if rt.start_timeout_s:
            local.start_timeout_s = rt.start_timeout_s
        return local
    if spec.provider == "static":
        from gpuwarden.providers.static import StaticProvider

        return StaticProvider(rt.http, rt.clock)
    from gpuwarden.providers.runpod import RunPodClient, RunPodProvider, load_api_key
    from gpuwarden.providers.runpod.client import DEFAULT_BASE_URL
    from gpuwarden.providers.runpod.provider import PROXY_URL

    client = RunPodClient(rt.http, load_api_key(rt.env, spec.runpod.api_key_file),
                          rt.runpod_base_url or DEFAULT_BASE_URL, rt.clock)
    provider = RunPodProvider(client, home, rt.http, rt.clock,
                              node_url_template=rt.runpod_node_url or PROXY_URL)
    if rt.runpod_poll_s is not None:
        provider.poll_interval_s = rt.runpod_poll_s
    if rt.start_timeout_s:
        provider.start_timeout_s = rt.start_timeout_s
    return provider


def _provider_error(exc: ProviderError) -> GpuwardenError:
    return GpuwardenError(str(exc))


def up(spec: ClusterDescription, state_db: StateDB, progress: Progress = no_progress,
       runtime: Runtime | None = None, provider: Provider | None = None) -> ClusterReport:
    """Create what is missing, wait until every node is RUNNING, bootstrapped and answering
    /healthz, and register the nodes.  Safe to repeat; an interrupted ``up`` resumes."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    check_not_taken(state_db, spec)
    provider = provider or open_provider(spec, home, rt)
    try:
        progress("checking price and capacity")
        per_hour = provider.quote(spec)
        if spec.budget_per_hour is not None and per_hour > spec.budget_per_hour:
            raise GpuwardenError(
                f"budget_per_hour: the cluster would cost ${per_hour:.2f}/hr, over the cap of "
                f"${spec.budget_per_hour:.2f}/hr; raise budget_per_hour or use fewer or "
                "cheaper GPUs (nothing was created)")
        save_description(Workspace(home, spec.name), spec)
        nodes = provider.provision(spec, progress)
    except ProviderError as exc:
        raise _provider_error(exc) from None
    upsert_provider_nodes(state_db, spec.name, spec.provider, nodes)
    progress(f"registered {len(nodes)} node(s)")
    problems = burn_in(spec, state_db, nodes, progress)
    return ClusterReport(spec.name, spec.provider, tuple(nodes),
                         sum(n.cost_per_hour for n in nodes), problems=problems)


def burn_in(spec: ClusterDescription, state_db: StateDB, nodes: Sequence[NodeRecord],
            progress: Progress = no_progress) -> tuple[str, ...]:
    """The burn-in of ``up``: a node new to the checks (none stored) is drained with reason
    ``gpuwarden: burn-in`` (the local provider drains it before its slurmd starts), its
    quick checks run, and it is resumed when they pass or keeps the failed check's reason
    (``[gpuwarden-check] NAME: FIGURE``); a node a check drained earlier is checked again
    and resumed when it passes.  Returns the problems (failed nodes) for the report."""
    controller = next((n for n in nodes if n.role == "controller" and n.url), None)
    if not spec.slurm or controller is None:
        return ()
    return asyncio.run(_burn_in(spec, state_db, nodes, controller, progress))


async def _burn_in(spec: ClusterDescription, state_db: StateDB, nodes: Sequence[NodeRecord],
                   controller: NodeRecord, progress: Progress) -> tuple[str, ...]:
    from gpuwarden.checks import (
        BURN_IN_REASON,
        Expectation,
        drained_by_checks,
        load_checks,
    )
    from gpuwarden.checks.react import react
    from gpuwarden.checks.remote import ask_node, compare_versions, slurm_places
    from gpuwarden.checks.store import CheckStore
    from gpuwarden.nodeclient import NodeClient, NodeError

    store = CheckStore(state_db)
    async with httpx.AsyncClient() as http:
        ctrl = NodeClient(http, controller.url or "", controller.token_file, timeout=30)
        try:
            new = [n for n in nodes if not store.runs(n.name, 1)]
            places = await slurm_places(ctrl)
            for node in new:
                place = places.get(node.name)
                if place is not None and not place.drained:  # joined without a drain
                    await ctrl.slurm_drain(node.name, BURN_IN_REASON)
            places = await slurm_places(ctrl) if new else places
        except NodeError as exc:
            return (f"burn-in not run: the Slurm controller's daemon failed ({exc}); new "
                    "nodes may stay drained until `gpuwarden check` passes",)
        due = [n for n in nodes if n.url and n.name in places and places[n.name].drained
               and drained_by_checks(places[n.name].reason)]
        if not due:
            return ()
        progress(f"burn-in: quick checks on {', '.join(n.name for n in due)}")
        specs = load_checks()
        expect = Expectation(spec.gpus_per_node, spec.gpu_type)

        async def one(node: NodeRecord) -> tuple[list, str | None]:
            try:
                client = NodeClient(http, node.url or "", node.token_file, timeout=120)
                return await ask_node(client, "quick", expect), None
            except NodeError as exc:
                return [], str(exc)

        answers = dict(zip([n.name for n in due], await asyncio.gather(*map(one, due)),
                           strict=True))
        judged = compare_versions(specs, {n: r for n, (r, err) in answers.items() if not err})
        problems = []
        for name, (_, error) in answers.items():
            run = store.record(name, "quick", "burn-in", judged.get(name, []), error)
            if error is not None:
                problems.append(f"{name}: burn-in checks did not run ({error}); it stays "
                                "drained")
                continue
            reaction = react(run.results, True, places[name].reason)
            try:
                if reaction.action == "resume":
                    progress(f"{name}: burn-in passed; resuming it in Slurm")
                    await ctrl.slurm_resume(name)
                    continue
                if reaction.action == "drain":
                    await ctrl.slurm_drain(name, reaction.reason)
            except NodeError as exc:
                problems.append(f"{name}: {reaction.action} failed ({exc})")
                continue
            failed = next((r for r in run.results if r.verdict == "fail"), None)
            if failed is not None:
                progress(f"{name}: burn-in failed: {failed.name}: {failed.figure}")
                problems.append(f"{name} stays drained: {failed.name}: {failed.figure} "
                                f"(expected {failed.expected}); `gpuwarden check {name}` "
                                "resumes it once it passes")
        return tuple(problems)


def status(name: str, state_db: StateDB, runtime: Runtime | None = None,
           provider: Provider | None = None) -> ClusterReport:
    """The cluster's nodes as the provider lists them now, $/hr and the cost so far."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    spec = load_saved(home, name)
    provider = provider or open_provider(spec, home, rt)
    problems: list[str] = []
    try:
        nodes = provider.observe(spec)
        try:
            spent = provider.cost_so_far(spec, nodes)
        except ProviderError as exc:
            spent, problems = None, [f"cost so far unavailable: {exc}"]
    except ProviderError as exc:
        raise _provider_error(exc) from None
    missing = spec.node_count - sum(1 for n in nodes if n.status not in GONE_STATES)
    if missing > 0:
        problems.append(f"{missing} node(s) missing; `gpuwarden up` creates them")
    problems += [n.detail for n in nodes if n.detail]
    return ClusterReport(name, spec.provider, tuple(nodes),
                         sum(n.cost_per_hour for n in nodes), spent, tuple(problems))


def down(name: str, state_db: StateDB, progress: Progress = no_progress,
         runtime: Runtime | None = None, provider: Provider | None = None) -> DownReport:
    """Terminate every node, reconcile against the provider's own list until nothing of the
    cluster is left, then unregister it.  Safe to repeat, and after a crashed ``up``."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    spec = load_saved(home, name)
    provider = provider or open_provider(spec, home, rt)
    try:
        report = provider.teardown(spec, progress)
    except ProviderError as exc:
        raise _provider_error(exc) from None
    gone = remove_provider_cluster(state_db, name)
    forget(Workspace(home, name))
    return DownReport(name, report.terminated, report.orphans, tuple(gone))


def stop_node(cluster_name: str, node_name: str, state_db: StateDB,
              progress: Progress = no_progress, runtime: Runtime | None = None,
              provider: Provider | None = None, *,
              action: Literal["stop", "terminate"] = "stop") -> NodeRecord:
    """Stop one node of a cluster ``up`` recorded, and re-record the cluster's nodes in the
    inventory.  ``action="stop"``: its GPUs are no longer billed and its disk is kept (still
    billed on RunPod); the node reads STOPPED at $0/hr, stays registered, and ``up`` or
    :func:`start_node` starts it again.  ``action="terminate"``: the node is removed (``down``
    for one node, disk included) and unregistered; ``up`` creates it anew.

    The Slurm controller (node 1) is stopped only once every other node is (ConflictError
    otherwise): the rest of the cluster's Slurm depends on it.  Static clusters refuse (the
    message says so).  Slurm jobs still running on a node are the caller's to check; the
    local provider refuses such a node, RunPod cannot tell."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    spec = load_saved(home, cluster_name)
    index = _index(spec, node_name)
    provider = provider or open_provider(spec, home, rt)
    try:
        if (why := cannot_stop(spec)) is not None:
            raise ProviderError(f"node {node_name}: {why}")
        if index == 1 and spec.slurm:
            up_still = [n.name for n in provider.observe(spec)
                        if n.index != 1 and n.status in _UP_STATES]
            if up_still:
                raise ConflictError(
                    f"node {node_name} is the Slurm controller and {', '.join(up_still)} "
                    f"still run on it; stop those first (or `gpuwarden down {spec.name}`)")
        act = provider.terminate if action == "terminate" else provider.stop
        record = act(spec, node_name, progress)
        nodes = provider.observe(spec)
    except ProviderError as exc:
        raise _provider_error(exc) from None
    _register(state_db, spec, nodes)
    return record


def start_node(cluster_name: str, node_name: str, state_db: StateDB,
               progress: Progress = no_progress, runtime: Runtime | None = None,
               provider: Provider | None = None) -> NodeRecord:
    """Start one stopped (or terminated) node again, wait until it is RUNNING, answering
    /healthz and (local Slurm) back in service, and re-record the cluster's nodes in the
    inventory.  A worker needs the Slurm controller (node 1) running: ConflictError names it
    otherwise.  Already running: only waits for it to be healthy."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    spec = load_saved(home, cluster_name)
    index = _index(spec, node_name)
    provider = provider or open_provider(spec, home, rt)
    try:
        if (why := cannot_stop(spec)) is not None:
            raise ProviderError(f"node {node_name}: {why}")
        if index != 1 and spec.slurm:
            controller = next((n for n in provider.observe(spec) if n.index == 1), None)
            if controller is None or controller.status != RUNNING:
                state = controller.status if controller else "missing"
                raise ConflictError(
                    f"node {node_name}: its Slurm controller {spec.node_names[0]} is {state}; "
                    f"start it first (`gpuwarden up` starts every node)")
        record = provider.start(spec, node_name, progress)
        nodes = provider.observe(spec)
    except ProviderError as exc:
        raise _provider_error(exc) from None
    _register(state_db, spec, nodes)
    return record


def replace_node(cluster_name: str, node_name: str, state_db: StateDB,
                 progress: Progress = no_progress, runtime: Runtime | None = None,
                 provider: Provider | None = None, *, force: bool = False,
                 actor: str = "cli") -> ClusterReport:
    """Replace one node's machine (a pod that failed its checks): drain its Slurm node with
    the burn-in reason, refuse if a Slurm job runs on it (``force`` replaces it anyway),
    terminate it, create a new one under the same name through ``up``'s create path (same
    tag, install source and secret delivery), wait until it answers, run the burn-in on it
    and re-record the cluster in the inventory.  Written to the audit log as
    ``replace_node``.  Capacity is checked before anything is terminated; a create that
    fails after the terminate says so, and ``gpuwarden up`` creates the node (nothing is
    left running unrecorded).  Static and Instant Cluster nodes cannot be replaced one by
    one; the Slurm controller (node 1) neither (the Slurm state and the workers depend on
    it): ``down`` and ``up`` the cluster instead."""
    rt = runtime or Runtime()
    home = home_of(state_db)
    spec = load_saved(home, cluster_name)
    index = _index(spec, node_name)
    provider = provider or open_provider(spec, home, rt)
    audit = AuditLog(state_db)

    def refuse(exc: GpuwardenError) -> GpuwardenError:
        audit.write(actor, "replace_node", node_name, "refused", error=str(exc), force=force)
        return exc

    if (why := cannot_replace(spec, node_name)) is not None:
        error = ConflictError if index == 1 and spec.slurm else GpuwardenError
        raise refuse(error(why))
    try:
        progress("checking price and capacity")
        provider.quote(spec)  # no capacity: refused before the old machine goes
        before = provider.observe(spec)
    except ProviderError as exc:
        raise refuse(_provider_error(exc)) from None
    old = next((n for n in before if n.name == node_name), None)
    if spec.slurm:
        controller = next((n for n in before if n.index == 1 and n.status == RUNNING
                           and n.url), None)
        if index != 1 and controller is None:
            raise refuse(ConflictError(
                f"node {node_name}: its Slurm controller {spec.node_names[0]} is not running; "
                "`gpuwarden up` starts it"))
        if controller is not None:
            try:
                asyncio.run(_hold_for_replace(controller, node_name, force, progress))
            except GpuwardenError as exc:
                raise refuse(exc) from None
    old_id = old.provider_id if old else None
    try:
        provider.terminate(spec, node_name, progress)
    except ProviderError as exc:
        audit.write(actor, "replace_node", node_name, "failed", error=str(exc), old=old_id)
        raise _provider_error(exc) from None
    try:
        provider.start(spec, node_name, progress)
        nodes = provider.observe(spec)
    except ProviderError as exc:
        with contextlib.suppress(ProviderError):  # the inventory as the provider has it
            _register(state_db, spec, provider.observe(spec))
        audit.write(actor, "replace_node", node_name, "failed", error=str(exc), old=old_id)
        raise GpuwardenError(
            f"node {node_name}: its old machine {old_id or '-'} was terminated but creating "
            f"the new one failed: {exc}; `gpuwarden up` creates it") from None
    _register(state_db, spec, nodes)
    new = next((n for n in nodes if n.name == node_name), None)
    progress(f"{node_name}: replaced {old_id or '-'} with {new.provider_id if new else '-'}")
    problems = burn_in(spec, state_db, nodes, progress)
    audit.write(actor, "replace_node", node_name, "executed", old=old_id,
                new=new.provider_id if new else None, force=force, problems=list(problems))
    return ClusterReport(spec.name, spec.provider, tuple(nodes),
                         sum(n.cost_per_hour for n in nodes), problems=problems)


def cannot_replace(spec: ClusterDescription, node_name: str) -> str | None:
    """Why ``node_name`` of ``spec`` cannot be replaced on its own (None: it can)."""
    if (why := cannot_stop(spec)) is not None:
        return f"node {node_name}: cannot replace it: {why}"
    if spec.slurm and spec.node_names[:1] == [node_name]:
        return (f"node {node_name} is the Slurm controller (the cluster's Slurm state and its "
                f"workers depend on it); replace a worker, or `gpuwarden down {spec.name}` "
                "then `gpuwarden up`")
    return None


def replaceable_nodes(state_db: StateDB) -> set[str]:
    """The inventory's nodes that ``replace_node`` can replace (the ``checks.replace``
    policy proposes only these)."""
    from gpuwarden.state.inventory import Inventory

    home, specs, found = home_of(state_db), {}, set()
    for node in Inventory(state_db).nodes():
        if node.source != "provider" or not node.cluster:
            continue
        if node.cluster not in specs:
            try:
                specs[node.cluster] = load_saved(home, node.cluster)
            except Exception:  # a cluster file gone or unreadable: nothing to replace with
                specs[node.cluster] = None
        spec = specs[node.cluster]
        if spec is not None and node.name in spec.node_names \
                and cannot_replace(spec, node.name) is None:
            found.add(node.name)
    return found


async def _hold_for_replace(controller: NodeRecord, node_name: str, force: bool,
                            progress: Progress) -> None:
    """Drain ``node_name`` with the burn-in reason (its replacement joins Slurm still
    drained, and the burn-in resumes it), then refuse when Slurm runs a job on it (the
    drain undone) unless ``force``."""
    from gpuwarden.checks import BURN_IN_REASON
    from gpuwarden.nodeclient import NodeClient, NodeError
    from gpuwarden.slurm.model import jobs_on

    async with httpx.AsyncClient() as http:
        ctrl = NodeClient(http, controller.url or "", controller.token_file, timeout=30)
        try:
            progress(f"draining {node_name} in Slurm")
            await ctrl.slurm_drain(node_name, BURN_IN_REASON)
            jobs = await ctrl.slurm_jobs()
        except NodeError as exc:
            if force:
                return
            raise GpuwardenError(
                f"node {node_name}: cannot tell whether Slurm runs jobs on it (the "
                f"controller's daemon failed: {exc}); fix that, or replace it with --force"
            ) from None
        busy = jobs_on(jobs, node_name)
        if busy and not force:
            await ctrl.slurm_resume(node_name)
            raise ConflictError(f"node {node_name}: job(s) {', '.join(busy)} run on it; not "
                                "replaced (the drain is undone); wait for them, or replace "
                                "it with --force")


def _index(spec: ClusterDescription, node_name: str) -> int:
    if node_name not in spec.node_names:
        raise NotFoundError(f"node {node_name!r} is not a node of cluster {spec.name} (its "
                            f"nodes: {', '.join(spec.node_names)})")
    return spec.node_names.index(node_name) + 1


def _register(state_db: StateDB, spec: ClusterDescription,
              nodes: Sequence[NodeRecord]) -> None:
    """The cluster's inventory rows as ``up`` writes them: stopped nodes stay (at their
    $0/hr), terminated and missing ones go."""
    upsert_provider_nodes(state_db, spec.name, spec.provider,
                          [n for n in nodes if n.status not in GONE_STATES])


def list_clusters(state_db: StateDB) -> list[str]:
    """Clusters ``up`` has recorded (their descriptions are saved)."""
    return saved_clusters(home_of(state_db))
