"""Node health checks for the API, the CLI and the agent: run them on nodes (the node
daemons measure, the control plane compares across the cluster and stores), read the last
results and their history, and react: a failed check opens a ``node_check`` alert and
drains the node under the ``checks.drain`` policy (dry-run | approve | auto, through the
watchdog's actions table); a node that passes again is resumed only if gpuwarden drained it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from gpuwarden.checks import (
    BURN_IN_REASON,
    CheckResult,
    Expectation,
    check_level,
    load_checks,
)
from gpuwarden.checks.model import HOLDER_NAME
from gpuwarden.checks.react import react
from gpuwarden.checks.remote import ask_node, compare_versions, cross_node_nccl, slurm_places
from gpuwarden.checks.spec import CheckSpec, selected
from gpuwarden.checks.store import CheckStore, StoredRun
from gpuwarden.errors import NotFoundError
from gpuwarden.nodeclient import NodeClient, NodeError
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import CheckCounts, CheckResultView, CheckRunView, NodeChecks
from gpuwarden.slurm.actions import shared_partition
from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.model import ACTIVE_STATES, SlurmNode
from gpuwarden.slurm.parsers.common import parse_duration
from gpuwarden.state.inventory import Node
from gpuwarden.watchdog.health import DRAIN_POLICY, check_alerts

log = logging.getLogger(__name__)


def store(cp: ControlPlane) -> CheckStore:
    return CheckStore(cp.db, cp.clock, cp.config.checks.retention_days * 86400.0)


def _nodes(cp: ControlPlane, names: Sequence[str]) -> list[Node]:
    nodes = [n for n in cp.inventory.nodes() if n.status != "STOPPED"]
    if not names:
        return nodes
    known = {n.name: n for n in cp.inventory.nodes()}
    missing = [n for n in names if n not in known]
    if missing:
        raise NotFoundError(f"no node {', '.join(missing)} in the inventory (nodes: "
                            f"{', '.join(sorted(known)) or 'none'})")
    return [known[n] for n in names]


def expectation(cp: ControlPlane, node: Node) -> Expectation:
    """What the node was asked for: its cluster file's GPUs per node and GPU type."""
    if node.source != "provider":
        return Expectation()
    from gpuwarden.providers.registry import home_of, load_saved

    try:
        spec = load_saved(home_of(cp.db), node.cluster)
    except Exception:  # a cluster file gone or unreadable: nothing to compare with
        return Expectation()
    return Expectation(spec.gpus_per_node, spec.gpu_type)


async def run(cp: ControlPlane, names: Sequence[str] = (), level: str = "quick", *,
              who: str = "checks", trigger: str = "on-demand",
              holder: int | None = None) -> list[NodeChecks]:
    """Run the checks up to ``level`` on ``names`` (every node when empty), store the
    results and react; returns each node's results with what was done.  On two or more
    nodes the ``nccl`` checks run once across them (``cross_node_nccl``; inside the
    ``holder`` job when one holds the nodes) instead of on each node alone."""
    check_level(level, "level")
    nodes = _nodes(cp, names)
    overrides = cp.config.checks.checks
    specs = load_checks(overrides)
    cross = [s for s in selected(specs, level) if s.kind == "nccl"] if len(nodes) > 1 else []
    per_node = {**overrides, **{s.name: {**(overrides.get(s.name) or {}), "enabled": False}
                                for s in cross}}
    http = cp.http()
    book = store(cp)
    judged = {name: at for name, (at, _) in book.run_times().items()}

    async def one(node: Node) -> tuple[list[CheckResult], str | None]:
        # the XID checks judge the XIDs since the node's last run (a hardware XID fails
        # one run; the next passes unless another came)
        expect = replace(expectation(cp, node), xids_since=judged.get(node.name))
        try:
            return await ask_node(NodeClient(http, node.url, node.token_file, timeout=3600),
                                  level, expect, per_node), None
        except NodeError as exc:
            return [], str(exc)

    answers = dict(zip([n.name for n in nodes],
                       await asyncio.gather(*(one(n) for n in nodes)), strict=True))
    for spec in cross:
        for name, result in (await _across(cp, spec, answers, holder)).items():
            answers[name][0].append(result)
    others = {}
    for name in {n.name for n in cp.inventory.nodes()} - set(answers):
        for check, (_, result) in book.latest(name).items():
            if any(s.name == check and s.kind == "versions" for s in specs):
                others[name] = result.figure
    judged = compare_versions(specs, {n: rs for n, (rs, err) in answers.items() if not err},
                              others)
    runs = {name: book.record(name, level, trigger, judged.get(name, []), error)
            for name, (_, error) in answers.items()}
    reactions = await _react(cp, runs, who)
    return [_view(book, name, reactions.get(name)) for name in answers]


async def _across(cp: ControlPlane, spec: CheckSpec,
                  answers: Mapping[str, tuple[list[CheckResult], str | None]],
                  holder: int | None) -> dict[str, CheckResult]:
    """``spec`` (an ``nccl`` check) across the nodes that answered with no failed check and
    that Slurm can run a step on (held by ``holder``, or not drained); the others get a
    skipped result that says why."""
    from gpuwarden.services import slurm

    def skip(why: str) -> CheckResult:
        return CheckResult(spec.name, spec.level, "skip", f"skipped: {why}", "",
                           spec.description)

    out: dict[str, CheckResult] = {}
    try:
        controller = slurm._controller(cp, cp.http(), timeout=1800)  # the step takes minutes
        places = await slurm_places(controller) if holder is None else {}
    except (NodeError, NotFoundError) as exc:
        return {name: skip(f"no Slurm controller to run it ({exc})") for name in answers}
    healthy, gpus = [], []
    for name, (results, error) in answers.items():
        failed = next((r.name for r in results if r.verdict == "fail"), None)
        count = next((r.value for r in results if r.name == "gpu_count"), None)
        place = places.get(name)
        if error or failed or not count:
            why = ("the node did not answer" if error else f"{failed} failed" if failed
                   else "no GPU count from its gpu_count check")
            out[name] = skip(f"not run across nodes: {why}")
        elif holder is None and (place is None or place.drained):
            out[name] = skip("not run across nodes: Slurm has it drained or does not "
                             "know it (a cross-node run is a Slurm step)")
        else:
            healthy.append(name)
            gpus.append(int(count))
    if len(healthy) < 2:
        return {**out, **{n: skip("a cross-node run needs two or more healthy nodes")
                          for n in healthy}}
    gres = all(places[n].gpus > 0 for n in healthy) if holder is None else False
    return {**out, **await cross_node_nccl(controller, spec, healthy, min(gpus), holder,
                                           gres=gres)}


async def _react(cp: ControlPlane, runs: dict[str, StoredRun], who: str) -> dict[str, str]:
    """Resume nodes gpuwarden drained that pass now; open alerts for failed nodes and
    propose their drain under the policy; run it at once when the policy allows."""
    from gpuwarden.services import slurm
    from gpuwarden.services.executor import ControlPlaneExecutor

    done: dict[str, str] = {}
    try:
        controller = slurm._controller(cp, cp.http())
        places = await slurm_places(controller)
    except (NodeError, NotFoundError) as exc:
        places = {}
        log.info("checks: no Slurm reaction (%s)", exc)
    for name, run_ in runs.items():
        place = places.get(name)
        if place is None or run_.verdict == "error":
            continue
        reaction = react(run_.results, place.drained, place.reason)
        if reaction.action == "resume":
            await slurm.node_action(cp, cp.http(), who, name, "resume")
            done[name] = f"resumed: {reaction.why}"
        elif reaction.action == "drain" and place.drained:  # drained by us: a new reason
            await slurm.node_action(cp, cp.http(), who, name, "drain", reaction.reason)
            done[name] = f"kept drained: {reaction.reason}"
        elif reaction.action == "none":
            done[name] = reaction.why
    # the alerts: one per node whose last run failed (the others resolve)
    opened = await asyncio.to_thread(check_alerts, cp.db, store(cp), cp.config.checks,
                                     cp.clock, {n: p.drained for n, p in places.items()})
    policies = opened.policies
    for action_id in opened.proposed:
        record = policies.get(action_id)
        what = "drain" if record.policy == DRAIN_POLICY else "replace"
        done[record.target] = (f"{done[record.target]}; " if record.target in done else "") + \
            f"{what} {record.state} (action {action_id}, policy {record.mode})"
    for record in await policies.run_approved(ControlPlaneExecutor(cp, who),
                                              only=lambda r: r.policy == DRAIN_POLICY):
        done[record.target] = f"drain {record.state}: {record.result}"
    return done


def counts(cp: ControlPlane, slurm_nodes: Sequence[SlurmNode]) -> CheckCounts:
    """The Overview's node health figures: nodes Slurm holds drained for their burn-in
    (``slurm_nodes``: the controller's snapshot), and inventory nodes whose last run failed."""
    known = {n.name for n in cp.inventory.nodes()}
    burn_in = sum(1 for n in slurm_nodes if n.reason == BURN_IN_REASON and "DRAIN" in n.flags)
    failing = sum(1 for name, last in store(cp).last_runs().items()
                  if name in known and last.verdict == "fail")
    return CheckCounts(burn_in=burn_in, failing=failing)


def node_checks(cp: ControlPlane, name: str, history: int = 20) -> NodeChecks:
    if name not in {n.name for n in cp.inventory.nodes()}:
        raise NotFoundError(f"no node {name!r} in the inventory")
    return _view(store(cp), name, None, history)


def _view(book: CheckStore, name: str, reaction: str | None, history: int = 20) -> NodeChecks:
    last = [_result_view(r, at) for at, r in book.latest(name).values()]
    runs = [CheckRunView(id=r.id, node=r.node, level=r.level, trigger=r.trigger, at=r.at,
                         verdict=r.verdict, error=r.error,  # type: ignore[arg-type]
                         results=[_result_view(x, r.at) for x in r.results])
            for r in book.runs(name, history)]
    return NodeChecks(node=name, last=last, runs=runs, reaction=reaction)


def _result_view(r: CheckResult, at: float | None) -> CheckResultView:
    return CheckResultView(name=r.name, level=r.level, verdict=r.verdict, figure=r.figure,
                           expected=r.expected, description=r.description, value=r.value,
                           at=at)


def by_partition(names: list[str], of: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """``names`` in groups whose nodes share a partition (``of``: each node's), in order:
    each node joins the first group it shares one with, else starts its own; a node in no
    partition is alone (nodes checked together run as one job, in one partition)."""
    groups: list[tuple[list[str], set[str]]] = []
    for name in names:
        mine = set(of.get(name, ()))
        for members, common in groups:
            if common & mine:
                members.append(name)
                common &= mine
                break
        else:
            groups.append(([name], mine))
    return [members for members, _ in groups]


class PeriodicChecks:
    """``checks.every``: ``serve``'s loop that checks idle nodes, at most
    ``checks.max_parallel`` at once.  A node is a candidate when Slurm has it idle (no job,
    not drained) and its last run is older than ``every``; it is held meanwhile by an
    exclusive Slurm job (``gpuwarden-check``, ``sbatch --exclusive -w NODE``) so no job
    lands on it.  When ``checks.level`` includes an ``nccl`` check and two or more nodes are
    due, they are held together by one job (with their GPUs) and the all-reduce runs across
    them as a step of it.  A holder that does not start at once (a node got busy) is
    cancelled and its nodes skipped; the holder is cancelled when the check ends.  Runs are
    recorded with trigger ``periodic``, and react as any other run (alert, drain under
    ``checks.drain``)."""

    START_WAIT = 10.0  # seconds a holder job may take to start before the node is skipped

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.every = float(cp.config.checks.every or 0)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.checked = 0
        self.skipped = 0

    async def run(self, stop: asyncio.Event) -> None:
        tick = min(self.every / 2, 15.0)
        try:
            while not stop.is_set():
                try:
                    await self.cycle()
                except Exception:  # one bad cycle (the controller away) must not end the loop
                    log.exception("periodic checks: cycle failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        finally:
            tasks = set(self.running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def cycle(self) -> list[str]:
        """Start the checks of the idle nodes due, up to the cap; returns their names."""
        from gpuwarden.services import slurm

        cp = self.cp
        self.running = {n: t for n, t in self.running.items() if not t.done()}
        room = cp.config.checks.max_parallel - len(self.running)
        if room <= 0:
            return []
        places = await slurm_places(slurm._controller(cp, cp.http()))
        busy = {node for j in await slurm.live_jobs(cp, cp.http())
                if j.state in ACTIVE_STATES for node in j.nodes}
        last = {name: at for name, (at, _) in store(cp).run_times().items()}
        now = cp.clock()
        due = [n.name for n in cp.inventory.nodes()
               if n.status != "STOPPED" and n.name not in self.running
               and (place := places.get(n.name)) is not None and not place.drained
               and place.state.lower() == "idle" and n.name not in busy
               and now - last.get(n.name, 0.0) >= self.every]
        due.sort(key=lambda name: last.get(name, 0.0))  # the longest unchecked first
        batch = due[:room]
        level = cp.config.checks.level
        across = any(s.kind == "nccl" for s in selected(load_checks(cp.config.checks.checks),
                                                          level))
        of = {name: places[name].partitions for name in batch}
        groups = by_partition(batch, of) if across else [[name] for name in batch]
        try:
            parts = slurm._snapshot(cp).partitions
        except (slurm.SlurmUnavailable, slurm.SlurmNotConfigured):
            parts = ()
        default = next((p.name for p in parts if p.default), None)
        limits = {p.name: p.time_limit for p in parts}
        for group in groups:
            gpus = min(places[name].gpus for name in group) if len(group) > 1 else 0
            # the holder names its partition (the default one when it holds the nodes):
            # sbatch's default partition need not hold them (a lab's second partition)
            partition = shared_partition(group, of, default)
            minutes = holder_minutes(level, limits.get(partition or ""))
            task = asyncio.create_task(self._check(group, gpus, partition, minutes),
                                       name=f"periodic-check-{','.join(group)}")
            for name in group:
                self.running[name] = task
        return batch

    async def _check(self, names: list[str], gpus: int, partition: str | None,
                     minutes: int) -> None:
        try:
            await self._held_check(names, gpus, partition, minutes)
        except Exception:  # logged here: nobody awaits this task's result
            log.exception("periodic checks: %s failed", ", ".join(names))

    async def _held_check(self, names: list[str], gpus: int, partition: str | None,
                          minutes: int) -> None:
        """Hold ``names`` with one exclusive job in ``partition`` for at most ``minutes``
        (with ``gpus`` GPUs of each when they are checked together, for the cross-node step),
        check them, cancel the holder."""
        from gpuwarden.services import slurm

        cp = self.cp
        level = cp.config.checks.level
        which = ", ".join(names)
        job_id = (await slurm.submit(cp, cp.http(), "checks", {
            "script": "#!/bin/sh\nsleep 86400\n", "name": HOLDER_NAME, "nodes": len(names),
            "nodelist": names, "exclusive": True, "time": str(minutes),
            "output": "/dev/null", **({"gpus_per_node": gpus} if gpus else {}),
            **({"partition": partition} if partition else {}),
            "comment": f"gpuwarden: holds {which} for its periodic {level} checks"})).job_id
        try:
            if not await self._started(job_id, names):
                self.skipped += len(names)
                log.info("periodic checks: %s got busy (holder job %s did not start); "
                         "skipped", which, job_id)
                return
            await run(cp, names, level, who="checks", trigger="periodic",
                      holder=job_id if len(names) > 1 else None)
            self.checked += len(names)
        finally:
            try:
                await slurm.job_action(cp, cp.http(), "checks", job_id, "cancel")
            except NodeError as exc:  # its time limit ends it anyway
                log.warning("periodic checks: cancelling holder job %s failed: %s",
                            job_id, exc)

    async def _started(self, job_id: int | None, names: list[str]) -> bool:
        """Whether the holder job runs on every one of ``names`` within ``START_WAIT``."""
        from gpuwarden.services import slurm

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.START_WAIT
        while True:
            for job in await slurm.live_jobs(self.cp, self.cp.http()):
                if job.job_id == job_id and job.state == "RUNNING":
                    return set(names) <= set(job.nodes)
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.5)


# the holder's Slurm time limit (minutes) by level: it ends by itself if gpuwarden does not
HOLDER_MINUTES = {"quick": 30, "standard": 90, "long": 360}


def holder_minutes(level: str, partition_limit: str | None) -> int:
    """The holder's time limit: the level's, cut to the partition's MaxTime when that is
    shorter (Slurm would leave a longer one pending, PartitionTimeLimit, and the node would
    be skipped as busy every round)."""
    minutes = HOLDER_MINUTES[level]
    try:
        limit = parse_duration(partition_limit) if partition_limit else None
    except ParseError:
        limit = None
    return max(1, min(minutes, limit // 60)) if limit is not None else minutes
