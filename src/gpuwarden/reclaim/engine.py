"""Reclaim idle GPUs from Slurm jobs: the warning ladder, carried out.

Every ``reclaim.interval`` the engine looks at each running GPU job of the controller's
Slurm snapshot and the peak utilization of its GPUs since the previous cycle (kept as the
scraper publishes each node: :mod:`gpuwarden.reclaim.peaks`; no read of the metrics store),
and moves the job along its ladder:

* not idle (a GPU got busy), exempt, or in its grace period: its streak ends, quietly;
* no fresh data for one of its GPUs (node not scraped, "bad data", Slurm unreachable):
  the ladder pauses and says why, and the streak restarts when data returns — missing
  data is never taken for idleness;
* idle: warnings at ``warn_after`` (owner and admins told, through Apprise), the action at
  ``act_after`` — after re-checking, right before it, from the store, that every GPU stayed
  below ``idle_below`` for the whole streak with no gap in the data.

``mode`` decides what the last step does: ``dry-run`` (the default) records what would have
happened and tells no one; ``approve`` proposes the action for an operator (it runs, after
the same re-check, once approved); ``auto`` acts.  At most ``max_actions_per_cycle`` actions
a cycle; ``reclaim.enabled: false`` or :meth:`Reclaimer.pause` stops everything.  Every
warning, action and decision goes to the audit log with the facts it was based on; what an
action stopped paying for goes to ``reclaim_events`` for the "$ saved" figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from gpuwarden.config import JobReclaimConfig, ServeConfig
from gpuwarden.durations import format_duration
from gpuwarden.metrics.model import MetricsStore, parse_selector
from gpuwarden.metrics.scraper import TargetState
from gpuwarden.providers.spec import ClusterDescription, cannot_stop
from gpuwarden.reclaim.ladder import (
    Gpu,
    JobFacts,
    Step,
    activity,
    exemption,
    in_grace,
    job_facts,
    next_step,
)
from gpuwarden.reclaim.peaks import UTIL, RunningPeaks
from gpuwarden.slurm.model import ACTIVE_STATES
from gpuwarden.state.audit import AuditLog
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.watchdog.actions import ActionRecord, Executor, Policies
from gpuwarden.watchdog.alerts import AlertBook
from gpuwarden.watchdog.notify import Notifier
from gpuwarden.watchdog.view import ClusterView, build_view

log = logging.getLogger(__name__)

POLICY = "reclaim:jobs"
NODE_POLICY = "reclaim:nodes"  # autostop
POLICIES = (POLICY, NODE_POLICY)
ACTOR = "reclaim"
ACTIONS = {"cancel": "cancel_job", "requeue": "requeue_job", "hold": "hold_job"}
VERB = {"cancel": "cancel", "requeue": "requeue", "hold": "requeue and hold"}
SAVED_HORIZON_S = 24 * 3600.0  # an action saves at most a day (the stated assumption)


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M UTC")


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """Where one job or node stands on its ladder as the last cycle left it (what
    ``reclaim plan`` shows)."""

    status: str
    why: str
    idle_since: float | None
    next_event: str | None  # warn | act | None
    next_at: float | None
    rate_per_hour: float
    burned: float  # $ spent while idle, this streak

    @classmethod
    def of(cls, item: _Item | None, rate: float, now: float, status: str, why: str,
           event: str | None = None, at: float | None = None, **own: Any) -> Self:
        """``cls`` (a kind of standing, ``own`` its own fields) from the ladder's row."""
        since = item.idle_since if item else None
        return cls(status=status, why=why, idle_since=since, next_event=event, next_at=at,
                   rate_per_hour=rate,
                   burned=round(rate * (now - since) / 3600, 4) if since else 0.0, **own)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate(Standing):
    """A running GPU job; status: idle | busy | unknown | exempt | grace | proposed | acted."""

    key: str
    job: JobFacts
    stage: int  # warnings sent, this streak
    last_warned_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCandidate(Standing):
    """A node of a cluster with ``autostop``; status: idle | busy | unknown | proposed |
    acted | stopped | waiting."""

    name: str
    cluster: str
    warned: bool
    action: str  # stop | terminate
    mode: str


@dataclass
class _Item:
    key: str
    owner: str
    idle_since: float | None
    stage: int
    last_warned_at: float | None
    action_id: int | None
    exempt_by: str | None
    note: str | None


class Reclaimer:
    def __init__(self, db: StateDB, config: ServeConfig, store: MetricsStore,
                 states: Callable[[], Mapping[str, TargetState]], *,
                 executor: Executor | None, notifier: Notifier, delivers: bool = False,
                 views: Callable[[], ClusterView | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._db = db
        self._store = store
        self._states = states
        self._executor = executor
        self._notifier = notifier
        self._delivers = delivers  # no watchdog delivers the outbox: this loop does
        self._views = views  # the watchdog's latest view, when there is a watchdog
        self._clock = clock
        self._inventory = Inventory(db)
        # fed by the scraper (``scraper.subscribers.append(reclaimer.peaks.observe)``);
        # unfed, each cycle sees only the latest samples
        self.peaks = RunningPeaks()
        self._audit = AuditLog(db)
        self.policies = Policies(db, [], AlertBook(db), self._audit, clock)
        self._last_cycle: float | None = None
        self.candidates: list[Candidate] = []
        self.nodes: list[NodeCandidate] = []
        self.paused_why: str | None = None  # why the last cycle judged nothing
        self.cycles = 0
        self.last_cycle_seconds = 0.0

    # ---- policy ---------------------------------------------------------------------------
    @property
    def policy(self) -> JobReclaimConfig | None:
        return self.config.reclaim.jobs

    @property
    def stale_after(self) -> float:
        return self.config.reclaim.stale_after or 3 * self.config.scrape.interval

    def switch(self) -> dict[str, Any] | None:
        row = self._db.connect().execute("SELECT * FROM reclaim_switch WHERE id = 1").fetchone()
        return dict(row) if row and row["paused_by"] else None

    def pause(self, who: str, reason: str = "") -> None:
        with self._db.write() as conn:
            conn.execute("INSERT INTO reclaim_switch(id, paused_by, paused_at, reason) "
                         "VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET paused_by = "
                         "excluded.paused_by, paused_at = excluded.paused_at, "
                         "reason = excluded.reason", (who, self._clock(), reason))
        self._audit.write(who, "reclaim_pause", "reclaim", "paused", reason=reason)

    def resume(self, who: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM reclaim_switch WHERE id = 1")
        self._audit.write(who, "reclaim_resume", "reclaim", "resumed")

    def exempt(self, key: str, who: str) -> None:
        """Keep job ``key`` whatever it does (until it ends); a proposed action is denied."""
        item = self._item(key)
        now = self._clock()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO reclaim_items(key, kind, owner, exempt_by, updated_at) "
                "VALUES (?, 'job', '', ?, ?) ON CONFLICT(key) DO UPDATE SET exempt_by = "
                "excluded.exempt_by, updated_at = excluded.updated_at", (key, who, now))
        if item is not None and item.action_id is not None:
            with contextlib.suppress(Exception):
                self.policies.decide(item.action_id, who, approve=False)
        self._event(now, key, "exempted", {"by": who})
        self._audit.write(who, "reclaim_exempt", f"job {key}", "exempted")

    # ---- the cycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.cycle()
            except Exception:
                log.exception("reclaim cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.reclaim.interval)

    async def cycle(self) -> list[ActionRecord]:
        to_run = await asyncio.to_thread(self.judge)
        done: list[ActionRecord] = []
        if self._executor is not None and to_run:
            done = await self.policies.run_approved(
                self._executor, only=lambda r: r.policy in POLICIES,
                recheck=self._recheck_action)
            for record in done:
                await asyncio.to_thread(self.finished, record, self._clock())
        if self._delivers:
            await asyncio.to_thread(self._notifier.deliver, self._clock())
        return done

    def judge(self, now: float | None = None) -> list[int]:
        """One pass over the running GPU jobs (synchronous: store reads and the state DB).
        Returns the ids of approved reclaim actions waiting to run."""
        began = time.perf_counter()
        now = self._clock() if now is None else now
        try:
            return self._judge(now)
        finally:
            self.cycles += 1
            self.last_cycle_seconds = time.perf_counter() - began

    def _judge(self, now: float) -> list[int]:
        policy = self.policy
        previous, self._last_cycle = self._last_cycle, now
        if not self.config.reclaim.enabled:
            self.paused_why, self.candidates, self.nodes = "reclaim.enabled is false", [], []
            return []
        switch = self.switch()
        if switch is not None:
            self.paused_why = f"paused by {switch['paused_by']}"
            self.candidates, self.nodes = [], []
            return []
        autostops = self._autostops()
        if policy is None and not autostops:
            self.paused_why = ("nothing to reclaim: no reclaim.jobs policy, and no cluster "
                               "of `gpuwarden up` has autostop")
            self.candidates, self.nodes = [], []
            return []
        view = self._view(now)
        gap = previous is None or now - previous > self.stale_after
        slurm_why = self._slurm_unusable(view, now)
        jobs: list[JobFacts] = []
        if policy is not None and slurm_why is None:
            jobs = self._jobs(view)
        peaks = self._peaks(view, now)
        acted = 0
        if policy is None:
            self.paused_why, self.candidates = None, []
        elif slurm_why is not None:  # nothing is known about jobs: the ladder stands still
            self.paused_why = slurm_why
        else:
            self.paused_why = None
            acted = self._judge_jobs(view, jobs, policy, peaks, now, gap)
        if autostops:
            self._judge_nodes(view, autostops, peaks, slurm_why, now, gap, acted)
        else:
            self.nodes = []
        return self._approved_ids()

    def _judge_jobs(self, view: ClusterView, jobs: Sequence[JobFacts],
                    policy: JobReclaimConfig, peaks: Mapping[Gpu, float | None], now: float,
                    gap: bool) -> int:
        rates = {(g.node, g.index): g.cost_per_hour for g in view.gpus}
        items = self._items()
        candidates: list[Candidate] = []
        acted = 0
        for job in jobs:
            item = items.pop(job.key, None)
            cand, acted = self._advance(job, item, policy, peaks, rates, now, gap, acted)
            candidates.append(cand)
        if items:  # jobs that ended or stopped holding GPUs leave the ladder
            with self._db.write() as conn:
                conn.executemany("DELETE FROM reclaim_items WHERE key = ? AND kind = 'job'",
                                 [(k,) for k in items])
        self.candidates = candidates
        return acted

    def _view(self, now: float) -> ClusterView:
        """The watchdog's view when it is recent (one view of the fleet per cycle, not two),
        else a fresh one.  Freshness of each node is judged against ``now`` either way."""
        shared = self._views() if self._views is not None else None
        if shared is not None and 0 <= now - shared.now <= min(self.config.reclaim.interval,
                                                               self.stale_after):
            return shared
        return self._fresh_view(now)

    def _fresh_view(self, now: float) -> ClusterView:
        return build_view(now, self.config.cluster, self._inventory.nodes(), self._states())

    def _slurm_unusable(self, view: ClusterView, now: float) -> str | None:
        controller = next((n for n in view.nodes if n.role == "controller"), None)
        if controller is None:
            return "no Slurm controller node is known"
        if not controller.up or now - controller.last_success > self.stale_after:
            return f"the Slurm controller node {controller.name} is not being scraped"
        snap = view.slurm
        if snap is None:
            return "the controller has no Slurm snapshot"
        if not snap.up:
            return "Slurm is not answering the controller (squeue failed)"
        collected = snap.last_success or snap.collected_at
        # a snapshot ages by the controller's Slurm interval before the next one replaces
        # it: that much is not staleness (a 2 s scrape beside a 15 s Slurm cycle)
        allowed = self.stale_after + (snap.interval_s or 0.0)
        if now - collected > allowed:
            return f"the Slurm snapshot is {format_duration(now - collected)} old"
        return None

    def _node_names(self, view: ClusterView) -> dict[str, str]:
        names = {n.name: n.name for n in view.nodes}
        for name, state in self._states().items():
            host = state.snapshot.node.hostname if state.snapshot is not None else ""
            if host:
                names.setdefault(host, name)
        return names

    def _fresh_nodes(self, now: float) -> set[str]:
        fresh = set()
        oldest = now - self.stale_after
        for name, s in self._states().items():
            if (s.up and s.bad_data is None and s.last_success >= oldest
                    and s.snapshot is not None and s.snapshot.timestamp >= oldest):
                fresh.add(name)
        return fresh

    def _peaks(self, view: ClusterView, now: float) -> dict[Gpu, float | None]:
        """Each watched GPU's peak utilization since the previous cycle, or None when there
        is no fresh data for it: its latest sample, raised by what the scraper reported in
        between (:class:`RunningPeaks`), so a spike between two cycles counts."""
        fresh = self._fresh_nodes(now)
        seen = self.peaks.take()
        peaks: dict[Gpu, float | None] = {}
        for g in view.gpus:  # a GPU the node reports down is no evidence of anything
            key = (g.node, g.index)
            value = g.fields.get(UTIL) if g.up and g.node in fresh else None
            if not isinstance(value, int | float):
                peaks[key] = None
                continue
            high = seen.get(key)
            peaks[key] = high if high is not None and high > value else float(value)
        return peaks

    # ---- one job --------------------------------------------------------------------------
    def _advance(self, job: JobFacts, item: _Item | None, policy: JobReclaimConfig,
                 peaks: Mapping[Gpu, float | None], rates: Mapping[Gpu, float], now: float,
                 gap: bool, acted: int) -> tuple[Candidate, int]:
        rate = sum([rates.get(g, 0.0) for g in job.gpus])

        def cand(status: str, why: str, it: _Item | None, step: Step | None = None
                 ) -> Candidate:
            return Candidate.of(it, rate, now, status, why, step.event if step else None,
                                step.due_at if step else None, key=job.key, job=job,
                                stage=it.stage if it else 0,
                                last_warned_at=it.last_warned_at if it else None)

        if item is not None and item.exempt_by:
            return cand("exempt", f"exempted by {item.exempt_by}", item), acted
        why = exemption(job, policy, now)
        if why is not None:
            self._forget(job.key)
            return cand("exempt", why, None), acted
        if in_grace(job, policy, now):
            return cand("grace", f"started under {format_duration(policy.grace)} ago", None), \
                acted
        if item is not None and item.action_id is not None:
            record = self.policies.get(item.action_id)
            if record.state in ("awaiting_approval", "approved"):
                return cand("proposed", f"{VERB[policy.action]} {record.state.replace('_', ' ')}"
                            f" (action {record.id})", item), acted
            if record.state in ("executed", "dry-run"):
                return cand("acted", f"{record.action} {record.state}", item), acted
            # denied or failed: the streak starts over
            item = self._save(job, _Item(job.key, job.user, None, 0, None, None, None,
                                         f"action {record.id} {record.state}"), now)
        state, detail = activity(job.gpus, peaks, policy)
        if state == "unknown":
            if item is not None and item.idle_since is not None:
                item.idle_since, item.note = None, f"paused: {detail}"
                self._save(job, item, now)
                self._event(now, job.key, "paused", {"why": detail})
            return cand("unknown", f"paused: {detail}", item), acted
        if state == "busy":
            if item is not None and item.idle_since is not None:
                self._event(now, job.key, "cleared", {"why": detail, "stage": item.stage})
                self._forget(job.key)
            return cand("busy", detail, None), acted
        # idle
        if item is None:
            item = _Item(job.key, job.user, None, 0, None, None, None, None)
        if item.idle_since is None or gap:
            if gap and item.idle_since is not None:
                self._event(now, job.key, "restarted", {"why": "a gap in watching"})
            item.idle_since = now
            self._save(job, item, now)
        step = next_step(policy, item.idle_since, item.stage, item.last_warned_at)
        if now < step.due_at:
            return cand("idle", detail, item, step), acted
        if step.event == "warn":
            self._warn(job, item, policy, step, rate, now)
            step = next_step(policy, item.idle_since, item.stage, item.last_warned_at)
            return cand("idle", detail, item, step), acted
        if acted >= self.config.reclaim.max_actions_per_cycle:
            return cand("idle", "waiting: the cap of actions per cycle is reached", item,
                        step), acted
        why_not = self._recheck(job.gpus, item.idle_since, now,
                                lambda peaks: activity(job.gpus, peaks, policy))
        if why_not is not None:
            self._event(now, job.key, "restarted", {"why": why_not})
            item.idle_since, item.stage, item.last_warned_at = now, 0, None
            self._save(job, item, now)
            return cand("idle", f"re-check: {why_not}", item,
                        next_step(policy, now, 0, None)), acted
        self._propose(job, item, policy, rate, now)
        return cand("proposed" if policy.mode != "dry-run" else "acted",
                    f"{VERB[policy.action]} {policy.mode}", item), acted + 1

    def _recheck(self, gpus: Sequence[Gpu], since: float, now: float,
                 judge: Callable[[Mapping[Gpu, float | None]], tuple[str, str]]) -> str | None:
        """Right before acting: ``gpus`` stayed idle, as ``judge`` reads their peaks, over
        the whole streak since ``since``, read from the store with data in every stretch of
        it (a gap is not idleness).  None when they did, else why not."""
        step = max(self.stale_after, (now - since) / 500)
        # the last stretch (newest samples may not be stored yet) is the cycle's own check
        end = now - step
        if end < since + step:
            return None
        nodes = "|".join(sorted({n for n, _ in gpus}))
        try:
            series = self._store.range(parse_selector(f'{UTIL}{{node=~"{nodes}"}}'),
                                       since + step, end, step, "max")
        except Exception as exc:
            return f"the metrics store did not answer ({exc})"
        by_gpu = {(s.labels.get("node"), s.labels.get("gpu")): s.points for s in series}
        wanted = int((end - since) // step)
        peaks: dict[Gpu, float | None] = {}
        for node, index in gpus:
            points = by_gpu.get((node, str(index)), [])
            if len(points) < wanted:
                return (f"{node}/gpu{index} has data for {len(points)} of {wanted} stretches "
                        "of the idle time")
            peaks[(node, index)] = max((v for _, v in points), default=None)
        state, detail = judge(peaks)
        return None if state == "idle" else f"{detail} over the idle time"

    async def _recheck_action(self, record: ActionRecord) -> str | None:
        """Before an approved action runs: the job still runs, is still idle, not exempt."""
        if not self.config.reclaim.enabled or self.switch() is not None:
            return "reclaim is disabled or paused"
        if record.policy == NODE_POLICY:
            return await asyncio.to_thread(self._recheck_node, record.target)
        policy = self.policy
        if policy is None:
            return "no reclaim.jobs policy is configured"
        return await asyncio.to_thread(self._recheck_now, record.target, policy)

    def _recheck_node(self, name: str) -> str | None:
        now = self._clock()
        item = self._item(f"node:{name}", "node")
        if item is None or item.idle_since is None:
            return f"node {name} is no longer idle"
        if name not in self._fresh_nodes(now):
            return f"no fresh data from node {name}"
        view = self._fresh_view(now)
        gpus = [(g.node, g.index) for g in view.gpus if g.node == name]
        threshold = self.config.idle_utilization_percent
        return self._recheck(gpus, item.idle_since, now,
                             lambda peaks: self._node_activity(gpus, peaks, threshold))

    @property
    def executor(self) -> Executor | None:
        return self._executor

    def running_job(self, key: str) -> JobFacts | None:
        """Job ``key`` as the live, fresh Slurm snapshot shows it, if it runs with GPUs."""
        now = self._clock()
        view = self._fresh_view(now)
        if self._slurm_unusable(view, now) is not None:
            return None
        return next((j for j in self._jobs(view) if j.key == key), None)

    def _jobs(self, view: ClusterView) -> list[JobFacts]:
        """The running GPU jobs of the view's Slurm snapshot."""
        node_of = self._node_names(view)
        jobs = view.slurm.jobs if view.slurm is not None else ()
        return [f for j in jobs if (f := job_facts(j, node_of))]

    def _recheck_now(self, key: str, policy: JobReclaimConfig) -> str | None:
        now = self._clock()
        view = self._fresh_view(now)
        why = self._slurm_unusable(view, now)
        if why is not None:
            return why
        job = next((j for j in self._jobs(view) if j.key == key), None)
        if job is None:
            return f"job {key} is no longer running with GPUs"
        item = self._item(key)
        if item is None or item.idle_since is None:
            return f"job {key} is no longer idle"
        if item.exempt_by:
            return f"job {key} was exempted by {item.exempt_by}"
        return exemption(job, policy, now) or self._recheck(
            job.gpus, item.idle_since, now, lambda peaks: activity(job.gpus, peaks, policy))

    # ---- steps ----------------------------------------------------------------------------
    def _facts(self, job: JobFacts, item: _Item, rate: float, now: float) -> dict[str, Any]:
        return {"job": job.key, "user": job.user, "name": job.name,
                "partition": job.partition, "account": job.account,
                "gpus": [f"{n}/gpu{i}" for n, i in job.gpus],
                "start_time": job.start_time, "time_limit_s": job.time_limit_s,
                "idle_since": item.idle_since, "idle_for_s": round(now - (item.idle_since or now)),
                "rate_per_hour": round(rate, 4),
                "burned": round(rate * (now - (item.idle_since or now)) / 3600, 4)}

    def _warn(self, job: JobFacts, item: _Item, policy: JobReclaimConfig, step: Step,
              rate: float, now: float) -> None:
        item.stage, item.last_warned_at = step.number, now
        self._save(job, item, now)
        after = next_step(policy, item.idle_since or now, item.stage, item.last_warned_at)
        facts = self._facts(job, item, rate, now) | {"warning": step.number,
                                                      "of": len(policy.warn_after),
                                                      "acts_at": after.due_at
                                                      if after.event == "act" else None}
        if policy.mode == "dry-run":
            self._event(now, job.key, "would_warn", facts)
            self._audit.write(ACTOR, "reclaim_warn", job.subject, "would warn (dry-run)",
                              **facts)
            return
        title, body = self._warning_text(job, item, policy, step, after, rate, now)
        sent = self._notifier.message(title, body, "warning", now, users=[job.user])
        self._event(now, job.key, "warned", facts | {"messages": sent})
        self._audit.write(ACTOR, "reclaim_warn", job.subject, "warned", messages=sent, **facts)

    def _warning_text(self, job: JobFacts, item: _Item, policy: JobReclaimConfig,
                      step: Step, after: Step, rate: float, now: float) -> tuple[str, str]:
        verb = VERB[policy.action]
        since = item.idle_since or now
        gpus = ", ".join(f"{n}/gpu{i}" for n, i in job.gpus[:8])
        more = f" and {len(job.gpus) - 8} more" if len(job.gpus) > 8 else ""
        when = after.due_at if after.event == "act" else since + policy.act_after
        what = (f"gpuwarden will {verb} it at {_hhmm(when)}" if policy.mode == "auto" else
                f"gpuwarden will ask an operator to {verb} it at {_hhmm(when)}")
        title = (f"gpuwarden: job {job.key} ({job.user}) idle for "
                 f"{format_duration(now - since)}: {verb} at {_hhmm(when)}")
        body = (
            f"Job {job.key} {job.name!r} of {job.user} (partition {job.partition}) holds "
            f"{len(job.gpus)} GPU(s) ({gpus}{more}) that have stayed below "
            f"{policy.idle_below:g} % utilization for {format_duration(now - since)} "
            f"(since {_hhmm(since)}).\n"
            f"Spent while idle so far: ${rate * (now - since) / 3600:.2f} (${rate:.2f}/hr).\n"
            f"Unless its GPUs get busy, {what} "
            f"(warning {step.number} of {len(policy.warn_after)}).\n"
            f"To keep it: `gpuwarden reclaim exempt {job.key}` (or Exempt in the dashboard's "
            f"Reclaim list)"
            + (f", or submit it with --comment {policy.exempt.keep_comment}."
               if policy.exempt.keep_comment else "."))
        return title, body

    def _propose(self, job: JobFacts, item: _Item, policy: JobReclaimConfig, rate: float,
                 now: float) -> None:
        facts = self._facts(job, item, rate, now)
        action = ACTIONS[policy.action]
        state = {"dry-run": "dry-run", "approve": "awaiting_approval",
                 "auto": "approved"}[policy.mode]
        reason = (f"gpuwarden reclaim: job {job.key} idle for "
                  f"{format_duration(now - (item.idle_since or now))} below "
                  f"{policy.idle_below:g} %")
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO actions(alert_id, policy, action, target, args, mode, state, "
                "reason, proposed_at) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (POLICY, action, job.key, json.dumps(facts, default=str), policy.mode, state,
                 reason, now))
        item.action_id = int(cur.lastrowid)
        self._save(job, item, now)
        outcome = {"dry-run": "would act (dry-run)", "approve": "proposed",
                   "auto": "approved"}[policy.mode]
        event = {"dry-run": "would_act", "approve": "proposed", "auto": "acting"}[policy.mode]
        self._event(now, job.key, event, facts | {"action": action, "action_id": item.action_id})
        self._audit.write(ACTOR, action, job.subject, outcome, action_id=item.action_id,
                          policy=POLICY, mode=policy.mode, **facts)
        if policy.mode == "approve":
            self._notifier.message(
                f"gpuwarden: approve {VERB[policy.action]} of idle job {job.key}?",
                f"{reason}; ${rate:.2f}/hr. Approve or deny action {item.action_id} in the "
                "dashboard's Actions, or `gpuwarden reclaim exempt` to keep it.",
                "warning", now)

    def finished(self, record: ActionRecord, now: float) -> None:
        """After an action ran: what it saves, and the owner told."""
        if record.state != "executed":
            return
        facts = json.loads(self._db.connect().execute(
            "SELECT args FROM actions WHERE id = ?", (record.id,)).fetchone()["args"] or "{}")
        rate = float(facts.get("rate_per_hour") or 0.0)
        if record.policy == NODE_POLICY:  # saves until the node runs again (open-ended)
            self._event(now, record.target, "acted", facts | {"result": record.result},
                        rate=rate, saved=(now, None), kind="node", mode=record.mode)
            gone = facts.get("autostop") == "terminate"
            self._notifier.message(
                f"gpuwarden: node {record.target} {'terminated' if gone else 'stopped'} by "
                "autostop", f"{record.result}. It had been idle for "
                f"{format_duration(float(facts.get('idle_for_s') or 0))} at ${rate:.2f}/hr; "
                + ("`gpuwarden up` creates it anew." if gone else
                   "`gpuwarden up` starts it again."), "warning", now)
            return
        until = now + SAVED_HORIZON_S
        start, limit = facts.get("start_time"), facts.get("time_limit_s")
        if isinstance(start, int | float) and isinstance(limit, int) and limit > 0:
            until = min(until, max(now, start + limit))
        verb = {"cancel_job": "cancelled", "requeue_job": "requeued",
                "hold_job": "requeued and held"}.get(record.action, record.action)
        self._event(now, record.target, "acted", facts | {"action": record.action,
                                                          "result": record.result},
                    rate=rate, saved=(now, until))
        user = str(facts.get("user") or "")
        idle = format_duration(float(facts.get("idle_for_s") or 0))
        self._notifier.message(
            f"gpuwarden: job {record.target} ({user}) {verb}: its GPUs were idle for {idle}",
            f"Job {record.target} {facts.get('name', '')!r} of {user} was {verb} by gpuwarden "
            f"reclaim: its {len(facts.get('gpus') or [])} GPU(s) stayed below the idle "
            f"threshold for {idle}, which cost ${facts.get('burned', 0):.2f} "
            f"(${rate:.2f}/hr). Action {record.id}.", "warning", now, users=[user])

    # ---- state ----------------------------------------------------------------------------
    def _items(self, kind: str = "job") -> dict[str, _Item]:
        rows = self._db.connect().execute(
            "SELECT * FROM reclaim_items WHERE kind = ?", (kind,)).fetchall()
        return {r["key"]: _Item(r["key"], r["owner"], r["idle_since"], r["stage"],
                                r["last_warned_at"], r["action_id"], r["exempt_by"], r["note"])
                for r in rows}

    def _item(self, key: str, kind: str = "job") -> _Item | None:
        r = self._db.connect().execute(
            "SELECT * FROM reclaim_items WHERE key = ? AND kind = ?", (key, kind)).fetchone()
        return None if r is None else _Item(r["key"], r["owner"], r["idle_since"], r["stage"],
                                            r["last_warned_at"], r["action_id"], r["exempt_by"],
                                            r["note"])

    def _save(self, job: JobFacts | None, item: _Item, now: float, kind: str = "job"
              ) -> _Item:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO reclaim_items(key, kind, owner, idle_since, stage, last_warned_at, "
                "action_id, exempt_by, note, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?) ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, idle_since = "
                "excluded.idle_since, stage = excluded.stage, last_warned_at = "
                "excluded.last_warned_at, action_id = excluded.action_id, exempt_by = "
                "excluded.exempt_by, note = excluded.note, updated_at = excluded.updated_at",
                (item.key, kind, job.user if job else "", item.idle_since, item.stage,
                 item.last_warned_at, item.action_id, item.exempt_by, item.note, now))
        return item

    def _forget(self, key: str, kind: str = "job") -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM reclaim_items WHERE key = ? AND kind = ? "
                         "AND exempt_by IS NULL", (key, kind))

    def _event(self, now: float, key: str, event: str, detail: Mapping[str, Any], *,
               rate: float | None = None, saved: tuple[float, float | None] | None = None,
               kind: str = "job", mode: str | None = None) -> None:
        if mode is None:
            mode = self.policy.mode if self.policy else "dry-run"
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO reclaim_events(at, key, kind, event, mode, detail, rate_per_hour, "
                "saved_from, saved_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, key, kind, event, mode, json.dumps(dict(detail), default=str), rate,
                 saved[0] if saved else None, saved[1] if saved else None))

    def _approved_ids(self) -> list[int]:
        return [r.id for r in self.policies.list("approved") if r.policy in POLICIES]

    # ---- nodes of clusters with autostop -----------------------------------------------------
    def _autostops(self) -> dict[str, ClusterDescription]:
        """The clusters `gpuwarden up` recorded whose description has ``autostop`` and whose
        nodes can be stopped one by one."""
        from gpuwarden.providers.registry import home_of, load_saved

        out = {}
        home = home_of(self._db)
        for cluster in self._inventory.clusters_with("provider"):
            try:
                spec = load_saved(home, cluster)
            except Exception:  # a description that went missing: nothing to enforce
                continue
            if spec.autostop is not None and cannot_stop(spec) is None:
                out[cluster] = spec
        return out

    def _judge_nodes(self, view: ClusterView, specs: Mapping[str, ClusterDescription],
                     peaks: Mapping[Gpu, float | None], slurm_why: str | None, now: float,
                     gap: bool, acted: int) -> None:
        """``autostop``: a node whose GPUs all stayed idle and that ran no Slurm job for
        ``idle_minutes`` is stopped (after a warning ``warn_before``), workers before the
        Slurm controller; its stopped time is what it saves."""
        inventory = [n for n in self._inventory.nodes() if n.cluster in specs]
        items = self._items("node")
        on_jobs: set[str] = set()
        for j in view.slurm.jobs if view.slurm is not None else ():
            if j.state in ACTIVE_STATES:
                on_jobs.update(j.nodes)
        gpus_of: dict[str, list[Gpu]] = {}
        rate_of: dict[str, float] = {}
        for g in view.gpus:
            gpus_of.setdefault(g.node, []).append((g.node, g.index))
            rate_of[g.node] = rate_of.get(g.node, 0.0) + g.cost_per_hour
        threshold = self.config.idle_utilization_percent
        out: list[NodeCandidate] = []
        for inv in inventory:
            spec = specs[inv.cluster]
            auto = spec.autostop
            assert auto is not None
            key = f"node:{inv.name}"
            item = items.pop(key, None)
            rate = 0.0 if inv.status == "STOPPED" else rate_of.get(inv.name, inv.cost_per_hour)

            def cand(status: str, why: str, it: _Item | None = None, event: str | None = None,
                     at: float | None = None, *, _inv: Any = inv, _rate: float = rate,
                     _auto: Any = auto) -> NodeCandidate:
                return NodeCandidate.of(it, _rate, now, status, why, event, at, name=_inv.name,
                                        cluster=_inv.cluster, warned=bool(it and it.stage),
                                        action=_auto.action, mode=_auto.mode)

            if inv.status == "STOPPED":
                out.append(cand("stopped", "stopped by autostop or an operator; `gpuwarden up` "
                                "starts it"))
                continue
            self._close_saved(inv.name, now)  # running again: its stopped time is counted
            if item is not None and item.action_id is not None:
                record = self.policies.get(item.action_id)
                if record.state in ("awaiting_approval", "approved", "dry-run", "executed"):
                    out.append(cand("proposed" if record.state != "dry-run" else "acted",
                                    f"{auto.action} {record.state.replace('_', ' ')} "
                                    f"(action {record.id})", item))
                    continue
                item = None
                self._forget(key, "node")
            held = gpus_of.get(inv.name, [])
            state, detail = ("unknown", "no GPU data from it") if not held else \
                self._node_activity(held, peaks, threshold)
            if state == "idle" and spec.slurm:
                if slurm_why is not None:
                    state, detail = "unknown", slurm_why
                elif inv.name in on_jobs:
                    state, detail = "busy", "a Slurm job runs on it"
            if state != "idle":
                if item is not None and item.idle_since is not None:
                    self._forget(key, "node")
                    self._event(now, inv.name, "cleared" if state == "busy" else "paused",
                                {"why": detail}, kind="node", mode=auto.mode)
                out.append(cand(state, detail if state == "busy" else f"paused: {detail}"))
                continue
            if item is None:
                item = _Item(key, "", None, 0, None, None, None, None)
            if item.idle_since is None or gap:
                item.idle_since = now
                self._save(None, item, now, "node")
            warn_at, act_at = item.idle_since + auto.warn_at_s, item.idle_since + auto.idle_s
            if item.last_warned_at is not None:  # a late warning keeps its notice
                act_at = max(act_at, item.last_warned_at + (auto.idle_s - auto.warn_at_s))
            if item.stage == 0:
                if now < warn_at:
                    out.append(cand("idle", detail, item, "warn", warn_at))
                    continue
                self._warn_node(inv.name, inv.cluster, item, auto, rate, act_at, now)
                out.append(cand("idle", detail, item, "act", act_at))
                continue
            if now < act_at:
                out.append(cand("idle", detail, item, "act", act_at))
                continue
            others = [n.name for n in inventory if n.cluster == inv.cluster and
                      n.name != inv.name and n.status != "STOPPED"]
            if inv.role == "controller" and spec.slurm and others:
                out.append(cand("waiting", "the Slurm controller stops after its workers "
                                f"({', '.join(others)})", item, "act", act_at))
                continue
            if acted >= self.config.reclaim.max_actions_per_cycle:
                out.append(cand("idle", "waiting: the cap of actions per cycle is reached",
                                item, "act", act_at))
                continue
            why_not = self._recheck(held, item.idle_since, now, lambda peaks, _held=held:
                                    self._node_activity(_held, peaks, threshold))
            if why_not is not None:
                self._event(now, inv.name, "restarted", {"why": why_not}, kind="node",
                            mode=auto.mode)
                item.idle_since, item.stage, item.last_warned_at = now, 0, None
                self._save(None, item, now, "node")
                out.append(cand("idle", f"re-check: {why_not}", item, "warn",
                                now + auto.warn_at_s))
                continue
            self._propose_node(inv.name, inv.cluster, item, auto, rate, now)
            acted += 1
            out.append(cand("proposed" if auto.mode != "dry-run" else "acted",
                            f"{auto.action} {auto.mode}", item))
        if items:
            with self._db.write() as conn:
                conn.executemany("DELETE FROM reclaim_items WHERE key = ? AND kind = 'node'",
                                 [(k,) for k in items])
        self.nodes = out

    @staticmethod
    def _node_activity(gpus: Sequence[Gpu], peaks: Mapping[Gpu, float | None],
                       threshold: float) -> tuple[str, str]:
        values = [peaks.get(g) for g in gpus]
        if any(v is not None and v >= threshold for v in values):
            return "busy", "a GPU is busy"
        if any(v is None for v in values):
            return "unknown", "no fresh data for one of its GPUs"
        return "idle", f"all {len(gpus)} GPUs below {threshold:g} %"

    def _warn_node(self, name: str, cluster: str, item: _Item, auto: Any, rate: float,
                   act_at: float, now: float) -> None:
        item.stage, item.last_warned_at = 1, now
        self._save(None, item, now, "node")
        idle = format_duration(now - (item.idle_since or now))
        facts = {"node": name, "cluster": cluster, "idle_for_s": round(now - (item.idle_since
                                                                                or now)),
                 "rate_per_hour": round(rate, 4), "autostop": auto.action, "acts_at": act_at}
        if auto.mode == "dry-run":
            self._event(now, name, "would_warn", facts, kind="node", mode=auto.mode)
            return
        verb = "stop" if auto.action == "stop" else "terminate"
        sent = self._notifier.message(
            f"gpuwarden: node {name} idle for {idle}: autostop will {verb} it at "
            f"{_hhmm(act_at)}",
            f"Node {name} of cluster {cluster} has run no job and all its GPUs stayed idle for "
            f"{idle}, at ${rate:.2f}/hr. Unless work lands on it, gpuwarden will {verb} it at "
            f"{_hhmm(act_at)}" + (" once an operator approves" if auto.mode == "approve" else "")
            + (" (its disk is kept; `gpuwarden up` starts it again)." if verb == "stop" else
               " (its disk goes with it).") + " To keep it: submit work, or `gpuwarden "
            "reclaim pause`.", "warning", now)
        self._event(now, name, "warned", facts | {"messages": sent}, kind="node",
                    mode=auto.mode)
        self._audit.write(ACTOR, "autostop_warn", f"node {name}", "warned", **facts)

    def _propose_node(self, name: str, cluster: str, item: _Item, auto: Any, rate: float,
                      now: float) -> None:
        facts = {"node": name, "cluster": cluster, "idle_since": item.idle_since,
                 "idle_for_s": round(now - (item.idle_since or now)),
                 "rate_per_hour": round(rate, 4), "autostop": auto.action,
                 "burned": round(rate * (now - (item.idle_since or now)) / 3600, 4)}
        state = {"dry-run": "dry-run", "approve": "awaiting_approval",
                 "auto": "approved"}[auto.mode]
        reason = (f"autostop: node {name} idle for "
                  f"{format_duration(now - (item.idle_since or now))}")
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO actions(alert_id, policy, action, target, args, mode, state, "
                "reason, proposed_at) VALUES (NULL, ?, 'stop_pod', ?, ?, ?, ?, ?, ?)",
                (NODE_POLICY, name, json.dumps(facts, default=str), auto.mode, state, reason,
                 now))
        item.action_id = int(cur.lastrowid)
        self._save(None, item, now, "node")
        event = {"dry-run": "would_act", "approve": "proposed", "auto": "acting"}[auto.mode]
        self._event(now, name, event, facts | {"action_id": item.action_id}, kind="node",
                    mode=auto.mode)
        self._audit.write(ACTOR, "stop_pod", f"node {name}",
                          {"dry-run": "would act (dry-run)", "approve": "proposed",
                           "auto": "approved"}[auto.mode], action_id=item.action_id,
                          policy=NODE_POLICY, **facts)

    def _close_saved(self, name: str, now: float) -> None:
        """A stopped node runs again: what its stop saved ends now."""
        with self._db.write() as conn:
            conn.execute("UPDATE reclaim_events SET saved_until = ? WHERE kind = 'node' AND "
                         "key = ? AND saved_from IS NOT NULL AND saved_until IS NULL",
                         (now, name))

    # ---- what it saved --------------------------------------------------------------------
    def saved_between(self, start: float, end: float) -> float:
        """$ that reclaim's actions stopped paying for between ``start`` and ``end``: each
        action's $/hr over the part of [action, would-have-ended] inside the window (a job
        would have run to its time limit, at most a day: the assumption)."""
        rows = self._db.connect().execute(
            "SELECT rate_per_hour, saved_from, COALESCE(saved_until, ?) FROM reclaim_events "
            "WHERE saved_from IS NOT NULL AND saved_from < ? AND COALESCE(saved_until, ?) > ?",
            (end, end, end, start)).fetchall()
        return round(sum(r[0] * (min(end, r[2]) - max(start, r[1])) / 3600 for r in rows), 4)

    def history(self, limit: int = 200, key: str | None = None) -> list[dict[str, Any]]:
        conn = self._db.connect()
        if key is None:
            rows = conn.execute("SELECT * FROM reclaim_events ORDER BY id DESC LIMIT ?",
                                (limit,)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM reclaim_events WHERE key = ? ORDER BY id DESC "
                                "LIMIT ?", (key, limit)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


def saved_windows(now: float) -> Sequence[tuple[str, float, float]]:
    """Today and this month (local time, as the Overview's waste today), as (label, start,
    end)."""
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    return (("today", day.timestamp(), now), ("month", month.timestamp(), now))
