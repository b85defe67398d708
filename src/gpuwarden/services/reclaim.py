"""Reclaim as the API, the CLI and the agent see it: the plan (each idle job's stage and
next step), the history, $ saved, and the operator's levers (pause, resume, exempt, act
now).  The ladder itself lives in :mod:`gpuwarden.reclaim`."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, TypeVar

from pydantic import Field

from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.reclaim.engine import ACTIONS, POLICY, Reclaimer, Standing, saved_windows
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import Out

M = TypeVar("M", bound=Out)


class ReclaimOff(GpuwardenError):
    """No reclaim policy is configured."""


class ReclaimCandidate(Out):
    key: str = Field(description="the Slurm job id (``42`` or ``42_3``)")
    kind: Literal["job"] = "job"
    user: str
    name: str
    partition: str
    gpus: list[str] = Field(description="node/gpuN held")
    status: str = Field(description="idle, busy, unknown (paused: no fresh data), exempt, "
                        "grace, proposed or acted")
    why: str
    idle_since: float | None = None
    warnings_sent: int = 0
    last_warned_at: float | None = None
    next_event: Literal["warn", "act"] | None = None
    next_at: float | None = None
    rate_per_hour: float = Field(description="$/hr of its GPUs")
    burned: float = Field(description="$ spent while idle, this streak")


class ReclaimNode(Out):
    name: str
    cluster: str
    status: str = Field(description="idle, busy, unknown (paused: no fresh data), waiting, "
                        "proposed, acted (dry-run: would have) or stopped")
    why: str
    idle_since: float | None = None
    warned: bool = False
    next_event: Literal["warn", "act"] | None = None
    next_at: float | None = None
    rate_per_hour: float
    burned: float
    action: str = Field(description="what autostop does: stop or terminate")
    mode: str


class ReclaimPlan(Out):
    enabled: bool
    mode: str | None = Field(None, description="dry-run, approve or auto")
    action: str | None = None
    paused: str | None = Field(None, description="why the ladder stands still, when it does")
    warn_after_s: list[float] = Field(default_factory=list)
    act_after_s: float | None = None
    idle_below: float | None = None
    candidates: list[ReclaimCandidate] = Field(default_factory=list)
    nodes: list[ReclaimNode] = Field(default_factory=list, description="nodes of clusters "
                                     "with autostop (their cluster file's policy)")
    saved_today: float = Field(0.0, description="$ not spent today thanks to reclaim actions "
                               "(each action's $/hr until the job's time limit, at most 24 h)")
    saved_month: float = 0.0
    cycles: int = 0
    last_cycle_seconds: float = 0.0


class ReclaimEvent(Out):
    id: int
    at: float
    key: str
    kind: str
    event: str = Field(description="would_warn, warned, would_act (dry-run), proposed "
                       "(approve), acting (auto), acted, paused, restarted, cleared or "
                       "exempted")
    mode: str
    detail: dict[str, Any]
    rate_per_hour: float | None = None
    saved_from: float | None = None
    saved_until: float | None = None


def _engine(cp: ControlPlane) -> Reclaimer:
    if cp.reclaim is None:
        raise ReclaimOff("reclaim is off (reclaim.enabled: false in the config file)")
    return cp.reclaim


def _out(model: type[M], standing: Standing, **more: Any) -> M:
    """The API's shape of a job's or node's standing: the fields they share, then ``more``."""
    return model(**{f: getattr(standing, f) for f in model.model_fields
                    if f not in more and hasattr(standing, f)}, **more)


def saved(cp: ControlPlane) -> tuple[float, float]:
    if cp.reclaim is None:
        return 0.0, 0.0
    now = cp.clock()
    today, month = (cp.reclaim.saved_between(s, e) for _, s, e in saved_windows(now))
    return today, month


def plan(cp: ControlPlane) -> ReclaimPlan:
    if cp.reclaim is None:
        return ReclaimPlan(enabled=False, paused="reclaim.enabled is false")
    r, policy = cp.reclaim, cp.reclaim.policy
    today, month = saved(cp)
    return ReclaimPlan(
        enabled=cp.config.reclaim.enabled and r.switch() is None,
        mode=policy.mode if policy else None, action=policy.action if policy else None,
        paused=r.paused_why, warn_after_s=list(policy.warn_after) if policy else [],
        act_after_s=policy.act_after if policy else None,
        idle_below=policy.idle_below if policy else None,
        candidates=[_out(ReclaimCandidate, c, user=c.job.user, name=c.job.name,
                         partition=c.job.partition, gpus=[f"{n}/gpu{i}" for n, i in c.job.gpus],
                         warnings_sent=c.stage, rate_per_hour=round(c.rate_per_hour, 4))
                    for c in r.candidates],
        nodes=[_out(ReclaimNode, n) for n in r.nodes],
        saved_today=today, saved_month=month, cycles=r.cycles,
        last_cycle_seconds=round(r.last_cycle_seconds, 4))


def history(cp: ControlPlane, *, key: str | None = None, limit: int = 200
            ) -> list[ReclaimEvent]:
    return [ReclaimEvent(**e) for e in _engine(cp).history(limit, key)]


def pause(cp: ControlPlane, who: str, reason: str = "") -> ReclaimPlan:
    _engine(cp).pause(who, reason)
    return plan(cp)


def resume(cp: ControlPlane, who: str) -> ReclaimPlan:
    _engine(cp).resume(who)
    return plan(cp)


def exempt(cp: ControlPlane, who: str, key: str) -> ReclaimPlan:
    _engine(cp).exempt(key, who)
    return plan(cp)


async def act_now(cp: ControlPlane, who: str, key: str) -> ReclaimEvent:
    """An operator's "reclaim it now": the policy's action on job ``key`` at once, if it is
    still running with GPUs (re-checked against the live Slurm snapshot just before)."""
    r = _engine(cp)
    policy = r.policy
    if policy is None:
        raise ReclaimOff("reclaim is not configured")
    found = next((c for c in r.candidates if c.key == key), None)
    if found is None:
        raise NotFoundError(f"job {key} is not a running GPU job reclaim watches; "
                            "`gpuwarden reclaim plan` lists them")
    action = ACTIONS[policy.action]
    facts = {"job": key, "user": found.job.user, "name": found.job.name,
             "gpus": [f"{n}/gpu{i}" for n, i in found.job.gpus],
             "rate_per_hour": found.rate_per_hour, "start_time": found.job.start_time,
             "time_limit_s": found.job.time_limit_s, "idle_since": found.idle_since,
             "idle_for_s": round(cp.clock() - found.idle_since) if found.idle_since else 0,
             "burned": found.burned, "by": who}
    with cp.db.write() as conn:
        cur = conn.execute(
            "INSERT INTO actions(alert_id, policy, action, target, args, mode, state, reason, "
            "proposed_at, decided_by, decided_at) VALUES (NULL, ?, ?, ?, ?, 'manual', "
            "'approved', ?, ?, ?, ?)",
            (POLICY, action, key, json.dumps(facts, default=str),
             f"gpuwarden reclaim: {who} acted now on job {key}", cp.clock(), who, cp.clock()))
    action_id = int(cur.lastrowid)

    async def still_running(record: Any) -> str | None:
        view = await asyncio.to_thread(r.running_job, record.target)
        return None if view else f"job {record.target} is no longer running with GPUs"

    if r.executor is None:
        raise ConflictError("this control plane has no executor for actions")
    done = await r.policies.run_approved(r.executor, only=lambda rec: rec.id == action_id,
                                         recheck=still_running)
    for record in done:
        await asyncio.to_thread(r.finished, record, cp.clock())
    record = r.policies.get(action_id)
    if record.state != "executed":
        raise ConflictError(f"job {key}: not acted on: {record.result or record.state}")
    return ReclaimEvent(**r.history(1, key)[0])


def story(cp: ControlPlane, key: str) -> list[tuple[str, str]]:
    """What reclaim did to job ``key``, oldest first: (event, one sentence) each, for the
    agent's "why was job 42 cancelled?"; empty when reclaim never touched it.  Read from the
    state database, so it holds after a restart and without a configured policy."""
    rows = cp.db.connect().execute(
        "SELECT at, event, mode, detail FROM reclaim_events WHERE key = ? AND kind = 'job' "
        "ORDER BY id", (key,)).fetchall()
    out = []
    for r in rows:
        d, event = json.loads(r["detail"]), r["event"]
        when = f"At {_clock_text(r['at'])}"
        gpus, idle = len(d.get("gpus") or []), d.get("idle_for_s")
        burned, rate = d.get("burned") or 0, d.get("rate_per_hour") or 0
        if event == "warned":
            text = (f"{when} gpuwarden reclaim warned its owner ({d.get('user')}) and the "
                    f"admins (warning {d.get('warning')} of {d.get('of')}): its {gpus} GPU(s) "
                    f"had been idle for {idle} s, ${burned:.2f} spent.")
        elif event == "acted":
            verb = {"cancel_job": "cancelled", "requeue_job": "requeued",
                    "hold_job": "requeued and held"}.get(d.get("action"), d.get("action"))
            who = (f"by {d['by']} through reclaim's act-now" if d.get("by")
                   else f"by gpuwarden reclaim ({r['mode']} mode)")
            text = (f"{when} the job was {verb} {who}: its {gpus} GPU(s) stayed below the "
                    f"idle threshold for {idle} s, costing ${burned:.2f} (${rate:.2f}/hr).")
        elif event in ("would_warn", "would_act"):
            text = (f"{when} reclaim (dry-run) would have "
                    f"{'warned' if event == 'would_warn' else 'acted'}; nothing was done.")
        elif event == "proposed":
            text = f"{when} reclaim proposed the action; it waited for an operator's approval."
        elif event == "exempted":
            text = f"{when} {d.get('by')} exempted the job from reclaim."
        elif event == "cleared":
            text = f"{when} its GPUs got busy again ({d.get('why')}); the ladder reset."
        else:
            continue
        out.append((event, text))
    return out


def _clock_text(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).isoformat(" ", "seconds")
