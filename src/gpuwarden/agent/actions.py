"""What the agent may propose to change, and how an approved proposal is carried out.

Each action has an argument model (so a proposal's arguments have one canonical form and one
digest), the words a user uses to ask for it (a model proposing an action the user never asked
for is refused before any person sees it), a sentence saying exactly what will run, a
re-check of the cluster's state at execution time, and one call into ``services/`` under the
approver's identity (which writes the audit log).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.nodeclient import NodeError
from gpuwarden.services import alerts as alert_svc
from gpuwarden.services import slurm
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.executor import ControlPlaneExecutor
from gpuwarden.services.models import NewSilence
from gpuwarden.state.audit import AuditLog


class JobArgs(BaseModel):
    job_id: int = Field(gt=0, description="Slurm job id")


class CancelArgs(JobArgs):
    reason: str = Field("", max_length=200, description="why, for the audit log")


class DrainArgs(BaseModel):
    node: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    reason: str = Field(min_length=1, max_length=200, description="Slurm's drain reason")


class NodeArgs(BaseModel):
    node: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class SilenceArgs(BaseModel):
    rule: str | None = Field(None, description="only this rule; null for every rule")
    subject: str = Field("*", description="subject glob, e.g. node3/*")
    duration: str = Field("2h", pattern=r"^\d+[smhd]$")
    comment: str = Field("", max_length=200)


@dataclass(frozen=True)
class Ctx:
    cp: ControlPlane
    client: httpx.AsyncClient
    actor: str  # the approver, as the audit log records them


@dataclass(frozen=True)
class Action:
    name: str
    args: type[BaseModel]
    intent: re.Pattern[str]
    describe: Callable[[Any], str]
    run: Callable[[Ctx, Any], Awaitable[str]]


def _job(cp: ControlPlane, job_id: int):
    found = next((j for j in slurm.jobs(cp) if j.job_id == job_id), None)
    if found is None:
        raise NotFoundError(f"job {job_id} is not in Slurm's queue any more")
    return found


def _snode(cp: ControlPlane, name: str):
    found = next((n for n in slurm.nodes(cp) if n.name == name), None)
    if found is None:
        raise NotFoundError(f"Slurm has no node {name!r}")
    return found


async def _cancel(c: Ctx, a: CancelArgs) -> str:
    job = _job(c.cp, a.job_id)
    if job.state not in ("PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "REQUEUED"):
        raise ConflictError(f"job {a.job_id} is {job.state}: nothing to cancel")
    return (await slurm.job_action(c.cp, c.client, c.actor, a.job_id, "cancel")).detail


async def _hold(c: Ctx, a: JobArgs) -> str:
    job = _job(c.cp, a.job_id)
    if job.state != "PENDING":
        raise ConflictError(f"job {a.job_id} is {job.state}: only pending jobs can be held")
    return (await slurm.job_action(c.cp, c.client, c.actor, a.job_id, "hold")).detail


async def _release(c: Ctx, a: JobArgs) -> str:
    job = _job(c.cp, a.job_id)
    if not job.reason.startswith("JobHeld"):
        raise ConflictError(f"job {a.job_id} is not held (reason {job.reason})")
    return (await slurm.job_action(c.cp, c.client, c.actor, a.job_id, "release")).detail


async def _drain(c: Ctx, a: DrainArgs) -> str:
    node = _snode(c.cp, a.node)
    if node.state in ("drained", "draining") or "DRAIN" in node.flags:
        raise ConflictError(f"node {a.node} is already {node.state} (reason {node.reason!r})")
    return (await slurm.node_action(c.cp, c.client, c.actor, a.node, "drain", a.reason)).detail


async def _resume(c: Ctx, a: NodeArgs) -> str:
    node = _snode(c.cp, a.node)
    if node.state not in ("drained", "draining", "down") and "DRAIN" not in node.flags:
        raise ConflictError(f"node {a.node} is {node.state}: nothing to resume")
    return (await slurm.node_action(c.cp, c.client, c.actor, a.node, "resume")).detail


async def _stop_pod(c: Ctx, a: NodeArgs) -> str:
    if a.node not in {n.name for n in c.cp.inventory.nodes()}:
        raise NotFoundError(f"no node {a.node!r} in the inventory")
    return await ControlPlaneExecutor(c.cp, c.actor).stop_pod(a.node, "ops agent, approved")


async def _silence(c: Ctx, a: SilenceArgs) -> str:
    s = alert_svc.add_silence(c.cp, NewSilence(rule=a.rule, subject=a.subject,
                                               duration=a.duration, comment=a.comment),
                              c.actor)
    return f"silence {s.id}: rule {s.rule or '*'} subject {s.subject} for {a.duration}"


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("cancel_job", CancelArgs, re.compile(r"\b(cancel|scancel|kill|abort|stop|terminate|end)",
                                                re.I),
           lambda a: f"scancel {a.job_id}: cancel Slurm job {a.job_id}", _cancel),
    Action("hold_job", JobArgs, re.compile(r"\b(hold|pause|park)", re.I),
           lambda a: f"scontrol hold {a.job_id}: keep pending job {a.job_id} from starting",
           _hold),
    Action("release_job", JobArgs, re.compile(r"\b(release|unhold|let .* (run|start))", re.I),
           lambda a: f"scontrol release {a.job_id}: let held job {a.job_id} start", _release),
    Action("drain_node", DrainArgs, re.compile(r"\b(drain|take .* out|out of service|"
                                               r"maintenance|cordon)", re.I),
           lambda a: f"scontrol update nodename={a.node} state=drain reason={a.reason!r}",
           _drain),
    Action("resume_node", NodeArgs, re.compile(r"\b(resume|undrain|bring .* back|return .* "
                                               r"to service|uncordon)", re.I),
           lambda a: f"scontrol update nodename={a.node} state=resume", _resume),
    Action("stop_pod", NodeArgs, re.compile(r"\b(stop|shut ?down|terminate|power off|"
                                            r"turn off)", re.I),
           lambda a: f"stop the machine of node {a.node} through its provider", _stop_pod),
    Action("silence_alert", SilenceArgs, re.compile(r"\b(silence|mute|snooze|quiet|"
                                                    r"acknowledge)", re.I),
           lambda a: f"silence alerts {a.rule or '*'} on {a.subject} for {a.duration}",
           _silence),
)}


def canonical(name: str, raw: dict[str, Any] | str | None) -> BaseModel:
    """The validated arguments of a proposed action; ValueError names the bad field."""
    action = ACTIONS[name]
    data = json.loads(raw) if isinstance(raw, str) else (raw or {})
    try:
        return action.args.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors())
        raise ValueError(f"{name}: {fields}") from None


def digest(name: str, args: BaseModel) -> str:
    """What an approval is bound to: the action and its exact, canonical arguments."""
    body = json.dumps({"tool": name, "args": args.model_dump(mode="json")}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def words(text: str) -> set[str]:
    """The identifier-like words of a text (node names, job ids)."""
    return set(re.findall(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text))


_JOB_IDS = re.compile(r"\bjobs?\s*(?:ids?\s*)?#?((?:\d+(?:\s*(?:,|and|&)\s*#?)?)+)", re.I)


def user_asked(name: str, user_text: str, args: dict[str, Any] | None = None,
               node_names: frozenset[str] = frozenset()) -> bool:
    """Whether the user's own words ask for this action (tool output never counts): the
    kind of action, and, where the user named jobs or nodes, one of those."""
    if not ACTIONS[name].intent.search(user_text):
        return False
    args = args or {}
    if "job_id" in args:
        named = {int(x) for m in _JOB_IDS.finditer(user_text)
                 for x in re.findall(r"\d+", m.group(1))}
        if named and int(args["job_id"]) not in named:
            return False
    if "node" in args:
        named_nodes = words(user_text) & node_names
        if named_nodes and args["node"] not in named_nodes:
            return False
    return True


async def execute(name: str, args: BaseModel, ctx: Ctx) -> str:
    """Run an approved action.  What the services do is audited there; an action refused
    here (the state changed since it was proposed) is audited as not executed."""
    try:
        return await ACTIONS[name].run(ctx, args)
    except (GpuwardenError, httpx.HTTPError) as exc:
        if not isinstance(exc, NodeError):  # a node's refusal is audited by the service
            data = args.model_dump(mode="json")
            target = str(data.get("job_id") or data.get("node") or data.get("subject") or "")
            AuditLog(ctx.cp.db).write(ctx.actor, name, target, "not executed",
                                      error=str(exc), via="ops agent", **data)
        raise ActionFailed(str(exc) or type(exc).__name__) from None


class ActionFailed(Exception):
    pass
