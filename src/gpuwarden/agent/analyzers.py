"""Deterministic analyzers: the answers operators need most, computed from the control
plane's services with no LLM at all (k8sgpt's lesson).  The LLM agent calls them as tools;
``gpuwarden ask`` without a model answers from them directly.

Every analyzer returns an :class:`Analysis`: a one-line summary, the facts behind it (each a
plain sentence a person can check against Slurm or the dashboard) and the raw figures.
Text that comes from cluster users (job names, comments, node reasons) is kept verbatim in
``data`` and quoted in facts; :mod:`gpuwarden.agent.fence` marks it as data before a model
sees it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import signal
from collections import defaultdict
from typing import Any

from pydantic import Field

from gpuwarden.agent.fence import quote
from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.gpu.model import is_application_xid
from gpuwarden.gpu.xids import describe_xid
from gpuwarden.services import alerts as alert_svc
from gpuwarden.services import checks as check_svc
from gpuwarden.services import jobreport, live, reclaim, slurm, waste
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import GpuView, JobUsage, Out, SlurmJobView, SlurmNodeView
from gpuwarden.slurm import reasons
from gpuwarden.slurm.hostlist import expand_hostlist

ECC_FIELDS = {
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "double-bit ECC errors (volatile)",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "double-bit ECC errors (lifetime)",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "single-bit ECC errors (volatile)",
    "DCGM_FI_DEV_RETIRED_DBE": "pages retired after double-bit errors",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "row remapping failures",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "rows remapped after uncorrectable errors",
}
SERIOUS_ECC = {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
               "DCGM_FI_DEV_RETIRED_DBE"}
THERMAL = {"hw_thermal_slowdown", "sw_thermal_slowdown", "hw_slowdown"}
MAX_NODES_SHOWN = 12  # node lines in a pending explanation: the ones that matter


class Analysis(Out):
    kind: str = Field(description="which analyzer answered")
    subject: str = Field(description="what it looked at: a job id, a node, the cluster")
    summary: str
    facts: list[str] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)

    def text(self) -> str:
        return "\n".join([self.summary, *(f"- {f}" for f in self.facts)])


def _when(ts: float | None) -> str:
    if not ts:
        return "unknown"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


_q = quote  # user-written text in a fact line: plain quotes for people, a fence for a model


def _dollars(x: float) -> str:
    return f"${x:,.2f}"


def _find_job(jobs: list[SlurmJobView], job_id: int) -> SlurmJobView | None:
    return next((j for j in jobs if j.job_id == job_id), None)


def _gpus_on(job: SlurmJobView, node: str) -> int:
    if job.gpu_detail:
        return len(job.gpu_detail.get(node, []))
    return math.ceil(job.gpus_requested / max(job.num_nodes, 1))


def _expected_end(job: SlurmJobView) -> float | None:
    if job.start_time and job.time_limit_s:
        return job.start_time + job.time_limit_s
    return None


# -- why is this job pending ----------------------------------------------------------------

ENDED = {  # Slurm's end states: what the job did, and what that means
    "COMPLETED": ("completed", "its script exited 0"),
    "FAILED": ("failed", "it exited with a non-zero exit code, or could not be started"),
    "CANCELLED": ("was cancelled", "scancel by its owner, an operator or an admin"),
    "TIMEOUT": ("timed out", "Slurm killed it at its time limit"),
    "OUT_OF_MEMORY": ("ran out of memory", "it used more memory than it was given and was "
                                           "killed"),
    "NODE_FAIL": ("ended with its node", "a node it ran on failed"),
    "PREEMPTED": ("was preempted", "a higher-priority job took its resources"),
    "BOOT_FAIL": ("never started", "a node failed to boot for it"),
    "DEADLINE": ("missed its deadline", "it could not run before its --deadline"),
    "REVOKED": ("was revoked", "it started on another cluster of a federation"),
    "SPECIAL_EXIT": ("was requeued and held", "it exited with the special exit code"),
}
# Slurm marks a job its cgroup's OOM killer hit with SIG_OOM (253); ExitCode shows it as
# signal 125 (253 & 0x7f), which no process was sent
SIG_OOM_SHOWN = 125
LIVE_STATES = {"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED",
               "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD",
               "REQUEUE_FED", "RESV_DEL_HOLD"}


def _partitions(job: SlurmJobView) -> set[str]:
    return set(job.partition.split(","))


def _gpu_holders(jobs: list[SlurmJobView]) -> dict[str, list[SlurmJobView]]:
    """Running jobs by node, only those holding GPUs there (a CPU-only job holds none)."""
    held: dict[str, list[SlurmJobView]] = defaultdict(list)
    for j in jobs:
        if j.state == "RUNNING" and (j.gpus_allocated or j.gpus_requested):
            for name in j.nodes:
                if _gpus_on(j, name) > 0:
                    held[name].append(j)
    return held


def _ahead(jobs: list[SlurmJobView], job: SlurmJobView) -> tuple[list[SlurmJobView], str]:
    """Pending jobs of the job's partitions that Slurm ranks above it: by priority where the
    view has it, else by Slurm's queue order (squeue sorts a partition's pending jobs by
    decreasing priority, and the collector keeps that order)."""
    parts = _partitions(job)
    mine = getattr(job, "priority", None)
    same = [j for j in jobs if j.state == "PENDING" and _partitions(j) & parts]
    if mine is not None and all(getattr(j, "priority", None) is not None for j in same):
        return [j for j in same if j.job_id != job.job_id
                and getattr(j, "priority", 0) > mine], "priority"
    ahead = []
    for j in same:
        if j.job_id == job.job_id:
            break
        ahead.append(j)
    return ahead, "queue order"


def _slurm_estimate(job: SlurmJobView) -> float | None:
    """Slurm's own expected start of a pending job (``squeue --start``: StartTime), when the
    collector passes it on."""
    for name in ("expected_start", "estimated_start", "start_time"):
        value = getattr(job, name, None)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return None


def _exit_status(job: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from what Slurm reports: ``exit_code`` as sacct's ``"2:0"`` or a
    number, ``exit_signal``/``signal`` where given apart."""
    code: int | None = None
    sig: int | None = None
    raw = getattr(job, "exit_code", None)
    if isinstance(raw, str) and raw.strip():
        head, _, tail = raw.strip().partition(":")
        code = int(head) if head.lstrip("-").isdigit() else None
        sig = int(tail) if tail.isdigit() else None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        code = int(raw)
    for name in ("exit_signal", "signal"):
        value = getattr(job, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            sig = value
    return code, sig or None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _ended(job: SlurmJobView, kind: str, usage: Any = None) -> Analysis:
    """A job that has ended, from what Slurm reports: state, exit code and signal, nodes,
    start and end (each read only where the Slurm data has it)."""
    subject = f"job {job.job_id}"
    what, meaning = ENDED.get(job.state, (f"ended in state {job.state}", "see Slurm's job "
                                                                           "states"))
    code, sig = _exit_status(job)
    end = getattr(job, "end_time", None)
    source = getattr(job, "source", None)
    where = ", ".join(job.nodes)
    summary = f"Job {job.job_id} {_q(job.name)} {what}"
    status = []
    if code is not None:
        status.append(f"exit code {code}")
    oom_mark = job.state == "OUT_OF_MEMORY" and sig == SIG_OOM_SHOWN
    if sig:
        status.append(f"signal {sig} ("
                      + ("Slurm's out-of-memory mark, not a signal sent" if oom_mark
                         else _signal_name(sig)) + ")")
    if status:
        summary += f" with {' and '.join(status)}"
    if where:
        summary += f" on {where}"
    summary += f": Slurm state {job.state} ({meaning})."
    facts = [f"Job {job.job_id} of user {job.user} in partition {job.partition}: Slurm state "
             f"{job.state}" + (f", as {source} reports it" if source else "") + "."]
    if job.reason and job.reason != "None":
        facts.append(f"Slurm's reason: {job.reason} — {reasons.explain(job.reason)}.")
    if code is not None and code > 128 and not sig:
        facts.append(f"Exit code {code} is what a shell reports for a process killed by "
                     f"signal {code - 128} ({_signal_name(code - 128)}).")
    if job.state == "OUT_OF_MEMORY":
        facts.append("The memory cgroup's OOM killer stopped it: it touched more memory than "
                     "its allocation (--mem, --mem-per-cpu or --mem-per-gpu). Resubmit with "
                     f"more, or make it use less: sacct -j {job.job_id} -o ReqMem,MaxRSS "
                     "shows both.")
    if sig == 9 and job.state in ("FAILED", "CANCELLED"):
        facts.append("Signal 9 (SIGKILL): killed from outside (scancel, the OOM killer, or "
                     "Slurm at its time limit).")
    times = []
    if job.start_time:
        times.append(f"started {_when(job.start_time)}")
    elapsed = getattr(job, "elapsed_s", None)
    if isinstance(end, int | float) and end:
        times.append(f"ended {_when(end)}")
        if elapsed is None and job.start_time:
            elapsed = end - job.start_time
    if isinstance(elapsed, int | float):
        times.append(f"ran {elapsed / 60:.1f} min")
    if times:
        facts.append(f"It {', '.join(times)}"
                     + (f" (time limit {job.time_limit_s / 60:.0f} min)"
                        if job.time_limit_s else "") + ".")
    if usage is not None:
        facts.append(_usage_fact(usage))
    if code is None and sig is None:
        facts.append("Slurm's data here has no exit code for it.")
    return Analysis(kind=kind, subject=subject, summary=summary, facts=facts,
                    data={"found": True, "job_id": job.job_id, "state": job.state,
                          "exit_code": code, "signal": sig, "nodes": list(job.nodes),
                          "start_time": job.start_time, "end_time": end, "source": source,
                          "reason": job.reason})


def _usage_fact(usage: Any) -> str:
    return (f"gpuwarden's stored history shows it on {len(usage.gpus)} GPU(s) "
            f"({', '.join(usage.gpus[:8])}) from {_when(usage.first_seen)} to "
            f"{_when(usage.last_seen)}.")


def _accounting(cp: ControlPlane) -> bool:
    """Whether the Slurm data includes accounting (slurmdbd's sacct records of finished
    jobs); without it a finished job is known only while slurmctld keeps it (MinJobAge)."""
    try:
        return bool(getattr(slurm.summary(cp), "accounting", False))
    except GpuwardenError:
        return False


def _unknown(job_id: int, accounting: bool, kind: str, usage: Any = None) -> Analysis:
    subject = f"job {job_id}"
    if accounting:
        summary = (f"Job {job_id} is not in Slurm's queue nor in its accounting records: it "
                   "never existed, or it ended before the accounting window gpuwarden reads.")
    else:
        summary = (f"Job {job_id} is not in Slurm's queue, and this cluster keeps no Slurm "
                   "accounting: a finished job is known only until slurmctld forgets it "
                   "(MinJobAge after it ends), so whether it ran and how it ended cannot be "
                   "told from Slurm.")
    facts = []
    if usage is not None:
        facts.append(_usage_fact(usage))
        summary += " It did run: " + _usage_fact(usage)
    return Analysis(kind=kind, subject=subject, summary=summary, facts=facts,
                    data={"found": False, "accounting": accounting,
                          "history": usage.model_dump() if usage is not None else None})


def _node_rows(nodes: dict[str, SlurmNodeView], members: list[SlurmNodeView], per_node: int,
               held: dict[str, list[SlurmJobView]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n in sorted(members, key=lambda n: n.name):
        usable = (n.state not in ("down", "drained", "draining", "fail", "future")
                  and not {"DRAIN", "NOT_RESPONDING"} & set(n.flags))
        rows.append({"node": n.name, "state": n.state, "flags": n.flags,
                     "reason": n.reason, "gpus_total": n.gpus_total,
                     "gpus_alloc": n.gpus_alloc, "gpus_free": n.gpus_idle,
                     "usable": usable, "fits": usable and n.gpus_idle >= per_node,
                     "held_by": [{"job_id": h.job_id, "user": h.user,
                                  "gpus": _gpus_on(h, n.name),
                                  "ends": _expected_end(h)} for h in held[n.name]]})
    return rows


def _node_line(r: dict[str, Any]) -> str:
    line = (f"{r['node']}: {r['state']}{'+' + '+'.join(r['flags']) if r['flags'] else ''}"
            f", {r['gpus_alloc']} of {r['gpus_total']} GPUs allocated, {r['gpus_free']} free")
    if r["reason"]:
        line += f", reason {_q(r['reason'])}"
    if r["held_by"]:
        line += "; GPUs held by " + ", ".join(
            f"job {h['job_id']} ({h['user']}, {h['gpus']} GPU(s), ends "
            f"{_when(h['ends'])})" for h in r["held_by"])
    return line


def explain_pending(cp: ControlPlane, job_id: int) -> Analysis:
    """Why a job waits: Slurm's reason in plain words (every reason code: resources,
    priority, dependency, holds, begin time, unavailable nodes, partition and QOS/association
    limits), and the nodes and jobs behind it; a job that is not pending is said to be so."""
    jobs = slurm.jobs(cp)
    job = _find_job(jobs, job_id)
    subject = f"job {job_id}"
    if job is None:
        return _unknown(job_id, _accounting(cp), "pending")
    if job.state not in LIVE_STATES or getattr(job, "finished", False):
        return _ended(job, "pending")
    base = [f"Job {job.job_id} {_q(job.name)} of user {job.user} in partition "
            f"{job.partition} is {job.state}."]
    if job.state != "PENDING":
        where = ", ".join(job.nodes) or "no node yet"
        return Analysis(kind="pending", subject=subject,
                        summary=f"Job {job_id} is not pending: it is {job.state} ({where}).",
                        facts=[*base, f"Started {_when(job.start_time)} on {where}."],
                        data={"found": True, "state": job.state, "nodes": job.nodes})
    r = reasons.reason(job.reason)
    nodes = {n.name: n for n in slurm.nodes(cp)}
    parts = _partitions(job)
    members = [n for n in nodes.values() if parts & set(n.partitions)] or list(nodes.values())
    per_node = math.ceil(job.gpus_requested / max(job.num_nodes, 1)) if job.gpus_requested else 0
    want_nodes = max(job.num_nodes, 1)
    facts = [*base, f"Slurm's reason: {job.reason} — {r.text}."]
    if job.gpus_requested:
        facts.append(f"It asks for {job.gpus_requested} GPU(s) on {want_nodes} node(s) "
                     f"({per_node} per node).")
    else:
        facts.append(f"It asks for no GPU: {job.num_cpus or 'some'} CPU(s) on {want_nodes} "
                     "node(s).")
    held = _gpu_holders(jobs)
    node_rows = _node_rows(nodes, members, per_node, held)
    fitting = [row for row in node_rows if row["fits"]]
    blocked = sorted((row for row in node_rows if not row["fits"]
                      and row["gpus_total"] >= per_node and row["held_by"]),
                     key=lambda row: min((e["ends"] or float("inf")) for e in row["held_by"]))
    unavailable = [row for row in node_rows if not row["usable"]]
    fit_now = [row["node"] for row in fitting]
    data: dict[str, Any] = {"found": True, "job_id": job.job_id, "name": job.name,
                            "comment": job.comment, "reason": r.code, "reason_raw": job.reason,
                            "reason_kind": r.kind, "gpus_per_node": per_node,
                            "nodes_wanted": want_nodes, "nodes_fitting_now": fit_now[:50]}
    summary = f"Job {job_id} is pending ({r.code}): {r.text}."
    shown: list[dict[str, Any]] = []
    if r.kind in (reasons.RESOURCES, reasons.PRIORITY, reasons.SCHEDULING):
        fit_shown = fitting[:MAX_NODES_SHOWN // 3]
        shown = fit_shown + blocked[:MAX_NODES_SHOWN - len(fit_shown)]
        summary = _resources_summary(job, r, per_node, want_nodes, node_rows, fit_now,
                                     blocked, summary, data, facts)
    if r.kind == reasons.PRIORITY:
        ahead, by = _ahead(jobs, job)
        data["ahead"] = [j.job_id for j in ahead]
        listed = ", ".join(str(j.job_id) for j in ahead[:10]) + (
            f" and {len(ahead) - 10} more" if len(ahead) > 10 else "")
        facts.append(f"{len(ahead)} pending job(s) of its partition rank above it (by {by}): "
                     + (listed or "none in gpuwarden's view"))
        if ahead:
            summary += f" Ahead of it: job(s) {listed}."
    elif r.kind == reasons.NODES:
        summary, shown = _nodes_summary(job, r, nodes, node_rows, unavailable, summary, data)
    elif r.kind == reasons.HELD:
        who = "an operator" if r.code == "JobHeldAdmin" else "its owner or an operator"
        summary += f" Release it with: scontrol release {job.job_id} ({who})."
        facts.append(f"Release it with: scontrol release {job.job_id} (or the API's release "
                     "action, operator role).")
    elif r.kind == reasons.DEPENDENCY:
        summary, more = _dependency(job, jobs, summary, data)
        facts += more
    elif r.kind == reasons.BEGIN:
        begin = _slurm_estimate(job)
        if begin:
            summary += f" It may start from {_when(begin)}."
        else:
            facts.append("Its begin time is not in gpuwarden's Slurm data (squeue's StartTime "
                         f"for pending jobs is not collected): squeue -j {job.job_id} -o %S "
                         "shows it.")
    elif r.kind == reasons.PARTITION:
        facts += _partition_facts(cp, job, members)
    elif r.kind == reasons.LIMIT:
        summary, more = _limit(job, jobs, r, summary, data)
        facts += more
    elif r.kind == reasons.NEVER:
        summary = f"Job {job_id} will never start as it is ({r.code}): {r.text}."
    for row in shown:
        facts.append(_node_line(row))
    if len(node_rows) > len(shown) and shown and r.kind != reasons.NODES:
        facts.append(f"{len(node_rows)} node(s) in the partition; {len(fitting)} could take "
                     f"it now, {len(blocked)} are busy with GPU jobs (the {len(shown)} most "
                     "relevant are listed).")
    if unavailable and r.kind in (reasons.RESOURCES, reasons.NODES):
        facts.append(f"{len(unavailable)} unavailable node(s): " + ", ".join(
            f"{u['node']} ({u['state']}{', reason ' + _q(u['reason']) if u['reason'] else ''})"
            for u in unavailable[:MAX_NODES_SHOWN]))
    if job.submit_time:
        waited = max(0.0, cp.clock() - job.submit_time)
        facts.append(f"Submitted {_when(job.submit_time)}, waiting {waited / 60:.0f} min.")
    data["nodes"] = shown + [u for u in unavailable[:MAX_NODES_SHOWN] if u not in shown]
    return Analysis(kind="pending", subject=subject, summary=summary, facts=facts, data=data)


def _resources_summary(job: SlurmJobView, r: reasons.Reason, per_node: int, want_nodes: int,
                       node_rows: list[dict[str, Any]], fit_now: list[str],
                       blocked: list[dict[str, Any]], summary: str, data: dict[str, Any],
                       facts: list[str]) -> str:
    """Which nodes could take a job waiting for resources (or behind others), which GPU jobs
    hold the rest, and when it could start: Slurm's estimate where the data has it, else the
    holders' time limits."""
    estimate = _slurm_estimate(job)
    if estimate:
        data["slurm_estimate"] = estimate
        facts.append(f"Slurm's estimated start (squeue --start): {_when(estimate)}.")
    if not per_node:
        if estimate:
            summary += f" Earliest start (Slurm's estimate): {_when(estimate)}."
        return summary
    capable = [row["node"] for row in node_rows if row["gpus_total"] >= per_node]
    if len(capable) < want_nodes:
        return (f"Job {job.job_id} can never start as asked: it wants {want_nodes} node(s) "
                f"with {per_node} GPUs each and partition {job.partition} has "
                f"{len(capable)} such node(s).")
    if len(fit_now) >= want_nodes and r.kind == reasons.PRIORITY:
        return summary + " Enough GPUs are free now; higher-priority jobs go first."
    summary = (f"Job {job.job_id} is pending ({r.code}): {r.text}. It needs {want_nodes} "
               f"node(s) with {per_node} free GPUs each; {len(fit_now)} node(s) have that now "
               f"({', '.join(fit_now[:5]) or 'none'}{', ...' if len(fit_now) > 5 else ''}).")
    holders = list(dict.fromkeys(e["job_id"] for row in blocked for e in sorted(
        row["held_by"], key=lambda e: e["ends"] or float("inf"))))
    data["gpu_holders"] = holders
    if holders:
        summary += (" GPUs are held by job(s) " + ", ".join(map(str, holders[:10]))
                    + (f" and {len(holders) - 10} more" if len(holders) > 10 else "") + ".")
    if estimate:
        summary += f" Earliest start (Slurm's estimate): {_when(estimate)}."
    ends = sorted(e["ends"] for row in blocked for e in row["held_by"] if e["ends"])
    needed = max(0, want_nodes - len(fit_now))
    if needed and len(ends) >= needed:
        data["earliest_by_time_limits"] = ends[needed - 1]
        summary += (" Earliest start if those jobs run to their time limit: "
                    f"{_when(ends[needed - 1])}"
                    + ("" if estimate else " (gpuwarden's estimate: Slurm's own, squeue "
                       "--start, is not in its data)") + ".")
    return summary


def _nodes_summary(job: SlurmJobView, r: reasons.Reason, nodes: dict[str, SlurmNodeView],
                   node_rows: list[dict[str, Any]], unavailable: list[dict[str, Any]],
                   summary: str, data: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The nodes Slurm names as unavailable (``UnavailableNodes:...``), or else the
    unavailable nodes of the job's partition, with their state and reason."""
    named: list[str] = []
    if r.detail.startswith("UnavailableNodes:"):
        named = list(expand_hostlist(r.detail.split(":", 1)[1].strip()))
    data["unavailable_nodes"] = named
    rows = {row["node"]: row for row in node_rows}
    listed = [rows[n] for n in named if n in rows] or unavailable
    for n in named:
        if n not in rows and n in nodes:
            listed.append(_node_rows(nodes, [nodes[n]], 0, defaultdict(list))[0])
    if listed:
        summary += " Unavailable: " + "; ".join(
            f"{u['node']} is {u['state']}{'+' + '+'.join(u['flags']) if u['flags'] else ''}"
            + (f" (reason {_q(u['reason'])})" if u["reason"] else "") for u in listed[:6]) + "."
    elif named:
        summary += f" Slurm names {', '.join(named)} as unavailable."
    return summary, listed[:MAX_NODES_SHOWN]


# the TRES a limit code's resource word stands for in sacctmgr
_LIMIT_TRES = {"GRES": "gres/gpu", "Cpu": "cpu", "CPU": "cpu", "Mem": "mem", "Memory": "mem",
               "Node": "node", "Billing": "billing", "Energy": "energy", "License": "license"}


def _limit_setting(code: str) -> tuple[str, str | None, str]:
    """The sacctmgr setting a limit reason names, the TRES it limits (None for job counts
    and wall time) and its scope (``qos`` or ``association``): ``QOSMaxGRESPerUser`` ->
    (``MaxTRESPerUser``, ``gres/gpu``, ``qos``); ``AssocGrpGRES`` -> (``GrpTRES``,
    ``gres/gpu``, ``association``); ``AssocMaxJobsLimit`` -> (``MaxJobs``, None, ...)."""
    m = reasons._LIMIT.match(code)  # the one reading of a limit code's name
    scope = "association" if code.startswith("Assoc") else "qos"
    if m is None:  # AccountingPolicy, QOSJobLimit, ...: the code is all Slurm says
        return code, None, scope
    _, kind, what, per, _ = m.groups()
    per = per or ""
    if what in ("Jobs", "Job", "SubmitJobs", "SubmitJob"):
        jobs = "SubmitJobs" if what.startswith("Submit") else "Jobs"
        return f"{kind}{jobs}{per if per not in ('', 'Limit') else ''}", None, scope
    if what in ("Wall", "WallDuration"):
        return f"{kind}Wall{'DurationPerJob' if per == 'PerJob' else ''}", None, scope
    tres = _LIMIT_TRES.get(what)
    minutes = "RunMins" if per == "RunMinutes" else "Mins" if "Minutes" in per else ""
    per_what = per if per.startswith("Per") else "PerJob" if per == "MinutesPerJob" else ""
    return f"{kind}TRES{minutes}{per_what}", tres, scope


def _limit(job: SlurmJobView, jobs: list[SlurmJobView], r: reasons.Reason, summary: str,
           data: dict[str, Any]) -> tuple[str, list[str]]:
    """The QOS or association limit that holds a job: the job's QOS or account, the
    sacctmgr setting the reason names, and the running jobs that count against it now (a
    per-user limit: its owner's jobs there; an aggregate or job-count one: every job
    there)."""
    setting, tres, scope = _limit_setting(r.code)
    per_user = "PerUser" in setting or (scope == "association" and setting.startswith("Max"))
    if scope == "qos":
        where = f"QOS {job.qos}" if job.qos else "its QOS"
        counted = [j for j in jobs if j.state == "RUNNING" and j.qos == job.qos]
        show = f"sacctmgr show qos {job.qos or '<qos>'}"
        raise_ = f"sacctmgr modify qos {job.qos or '<qos>'} set {setting}=..."
    else:
        where = (f"the association of user {job.user} in account {job.account}"
                 if job.account else f"the association of user {job.user}")
        counted = [j for j in jobs if j.state == "RUNNING" and j.account == job.account]
        show = f"sacctmgr show assoc where account={job.account or '<account>'}"
        raise_ = (f"sacctmgr modify account {job.account or '<account>'} set {setting}=..."
                  if setting.startswith("Grp") else
                  f"sacctmgr modify user {job.user} where account={job.account or '<account>'}"
                  f" set {setting}=...")
    per_job = setting.endswith(("PerJob", "PerNode", "PerTask"))
    if per_user:
        counted = [j for j in counted if j.user == job.user]
    if per_job:  # the job alone is over it: what others run does not count
        counted = []
    gpus = sum(j.gpus_allocated or j.gpus_requested for j in counted)
    named = setting + (f" ({tres})" if tres else "") if setting != r.code else \
        f"the limit Slurm calls {r.code}"
    data["limit"] = {"scope": scope, "setting": setting, "tres": tres,
                     "qos": job.qos or None, "account": job.account or None,
                     "per_user": per_user, "holders": [j.job_id for j in counted],
                     "gpus_held": gpus}
    owner = f"{job.user}'s " if per_user else ""
    if per_job:
        use = f"it asks for {job.gpus_requested} GPU(s), {job.num_cpus} CPU(s) by itself"
        then = "It cannot start until the limit is raised or it asks for less"
    elif counted:
        use = (f"{owner}running job(s) there: " + ", ".join(str(j.job_id) for j in counted[:10])
               + (f" and {len(counted) - 10} more" if len(counted) > 10 else "")
               + f", holding {gpus} GPU(s)")
        then = "It starts when enough of them end or the limit is raised"
    else:
        use = f"no {owner}running job there in gpuwarden's view"
        then = "It starts when the limit is raised or usage drops"
    summary += f" The limit: {named} of {where}; {use}. {then} ({raise_})."
    facts = [f"The limit is {named} of {where} (see it with: {show}).",
             f"Counted against it now: {use}."]
    if job.gpus_requested and not per_job:
        facts.append(f"Job {job.job_id} would add {job.gpus_requested} GPU(s).")
    return summary, facts


def _dependency(job: SlurmJobView, jobs: list[SlurmJobView], summary: str,
                data: dict[str, Any]) -> tuple[str, list[str]]:
    spec = getattr(job, "dependency", None)
    if not spec:
        return summary, [f"gpuwarden's Slurm data does not include the dependency itself: "
                         f"scontrol show job {job.job_id} shows it (Dependency=...)."]
    ids = [int(x) for x in re.findall(r"(?<![\w.])(\d+)(?:_\d+)?(?=[(:,?+]|$)", str(spec))]
    by_id = {j.job_id: j for j in jobs}
    data["depends_on"] = ids
    states = [f"job {i} is {by_id[i].state}" if i in by_id else f"job {i} has left the queue"
              for i in ids]
    if states:
        summary += f" It depends on {spec} ({'; '.join(states)})."
    return summary, [f"Dependency: {spec}."]


def _partition_facts(cp: ControlPlane, job: SlurmJobView,
                     members: list[SlurmNodeView]) -> list[str]:
    facts = [f"It asks for {max(job.num_nodes, 1)} node(s); partition {job.partition} has "
             f"{len(members)} node(s)."]
    try:
        parts = {p.name: p for p in slurm.partitions(cp)}
    except GpuwardenError:
        return facts
    for name in _partitions(job):
        p = parts.get(name)
        if p is None:
            continue
        limit = f", time limit {job.time_limit_s // 60} min" if job.time_limit_s else ""
        facts.append(f"Partition {p.name} is {p.available}, MaxTime {p.time_limit or 'unset'}"
                     f"{limit}.")
    return facts


async def job_outcome(cp: ControlPlane, job_id: int, days: float = 7.0) -> Analysis:
    """How a job ended (or that it has not), from what Slurm reports: state, exit code and
    signal, node, start and end; plus the GPUs gpuwarden saw it on.  A job Slurm no longer
    knows is said to be so, never guessed."""
    end = cp.clock()
    try:
        jobs = slurm.jobs(cp)
    except GpuwardenError:
        jobs = []
    job = _find_job(jobs, job_id)
    try:
        found = await slurm.job_history(cp, job_id=job_id, start=end - days * 86400, end=end)
    except (GpuwardenError, ValueError):
        found = []
    usage = found[0] if found else None
    if job is None:
        return _unknown(job_id, _accounting(cp), "outcome", usage)
    if job.state not in LIVE_STATES or getattr(job, "finished", False):
        ended = _ended(job, "outcome", usage)
        told = reclaim.story(cp, str(job_id))
        acted = [text for event, text in told if event == "acted"]
        if acted:
            ended.summary += " " + acted[-1]
        ended.facts.extend(text for _, text in told)
        return ended
    if job.state == "PENDING":
        pending = explain_pending(cp, job_id)
        return Analysis(kind="outcome", subject=pending.subject,
                        summary=f"Job {job_id} has not started yet. " + pending.summary,
                        facts=pending.facts, data={**pending.data, "state": job.state})
    where = ", ".join(job.nodes) or "no node yet"
    facts = [f"Job {job.job_id} {_q(job.name)} of user {job.user} is {job.state} on {where} "
             f"since {_when(job.start_time)}."]
    if _expected_end(job):
        facts.append(f"Its time limit ends it at {_when(_expected_end(job))} at the latest.")
    if usage is not None:
        facts.append(_usage_fact(usage))
    return Analysis(kind="outcome", subject=f"job {job_id}",
                    summary=f"Job {job_id} has not ended: it is {job.state} on {where}.",
                    facts=facts, data={"found": True, "state": job.state,
                                       "nodes": list(job.nodes)})


# -- which GPUs are wasted -------------------------------------------------------------------


def waste_report(cp: ControlPlane, top_k: int = 20) -> Analysis:
    """Idle and allocated-but-idle GPUs with what they cost, by user and by node."""
    total, wasted = live.wasted_gpus(cp)
    per_hour = sum(g.cost_per_hour for g in wasted)
    today = waste.waste_today(cp)
    by_user: dict[str, list[GpuView]] = defaultdict(list)
    for g in wasted:
        if g.state == "allocated_idle":
            for u in {j.user or "unknown" for j in g.jobs}:
                by_user[u].append(g)
    by_node: dict[str, list[GpuView]] = defaultdict(list)
    for g in wasted:
        by_node[g.node].append(g)
    idle = [g for g in wasted if g.state == "idle"]
    alloc_idle = [g for g in wasted if g.state == "allocated_idle"]
    threshold = cp.config.idle_utilization_percent
    summary = (f"{len(wasted)} of {total} GPUs are below {threshold:g}% utilization: "
               f"{len(alloc_idle)} allocated to jobs but idle, {len(idle)} unallocated and "
               f"idle, costing {_dollars(per_hour)}/hr.")
    if today is not None:
        summary += f" Spent on idle GPUs today: {_dollars(today)}."
    facts = []
    for user, items in sorted(by_user.items(), key=lambda kv: -sum(g.cost_per_hour
                                                                     for g in kv[1])):
        jobs = sorted({j.job_id for g in items for j in g.jobs})
        facts.append(f"user {user}: {len(items)} allocated-idle GPU(s) in job(s) "
                     f"{', '.join(jobs)}, {_dollars(sum(g.cost_per_hour for g in items))}/hr")
    for node, items in sorted(by_node.items(), key=lambda kv: -len(kv[1]))[:top_k]:
        facts.append(f"{node}: " + ", ".join(
            f"gpu{g.index} {g.state.replace('_', '-')} "
            f"{(g.utilization or 0):.0f}%" for g in sorted(items, key=lambda g: g.index))
            + f" ({_dollars(sum(g.cost_per_hour for g in items))}/hr)")
    rows = sorted(wasted, key=lambda g: (g.state != "allocated_idle", -g.cost_per_hour,
                                         g.node, g.index))[:top_k]
    return Analysis(kind="waste", subject="cluster", summary=summary, facts=facts,
                    data={"gpus_total": total, "allocated_idle": len(alloc_idle),
                          "idle": len(idle), "waste_per_hour": round(per_hour, 4),
                          "waste_today": today, "threshold_percent": threshold,
                          "by_user": {u: round(sum(g.cost_per_hour for g in v), 4)
                                      for u, v in by_user.items()},
                          "gpus": [{"node": g.node, "gpu": g.index, "state": g.state,
                                    "utilization": g.utilization,
                                    "jobs": [j.job_id for j in g.jobs],
                                    "users": sorted({j.user for j in g.jobs}),
                                    "cost_per_hour": g.cost_per_hour} for g in rows]})


# -- what is wrong with this node ------------------------------------------------------------

# Hardware/driver XIDs by severity (NVIDIA's XID catalogue): the GPU gone, then memory
# (uncontained and double-bit ECC, row remapping), then NVLink, GSP firmware, the
# micro-controller.  Application XIDs come after every hardware one.
XID_SEVERITY = (79, 95, 48, 64, 63, 94, 92, 74, 119, 120, 62, 61)
XID_SHORT = {
    79: "GPU fallen off the bus", 95: "uncontained ECC error", 48: "double-bit ECC error",
    64: "row remapping/page retirement failed", 63: "row remapping/page retirement recorded",
    94: "contained ECC error", 92: "high single-bit ECC rate", 74: "NVLink error",
    119: "GSP RPC timeout", 120: "GSP error", 62: "micro-controller halt",
    61: "micro-controller warning", 13: "graphics engine exception",
    31: "GPU memory page fault", 43: "GPU stopped processing", 45: "preemptive cleanup",
    68: "video processor exception",
}
# problem ranks: what a reader must see first
_NODE_DOWN, _GPU_DOWN, _HW_XID, _ECC, _SLURM, _THERMAL, _HEALTH, _APP_XID = range(8)
_CHECK = 0.5  # a failed health check: after "does not answer", before everything else


def xid_rank(xid: int) -> tuple[int, int]:
    """Sort key: hardware XIDs by severity, unknown hardware ones next, application last."""
    if is_application_xid(xid):
        return (2, xid)
    if xid in XID_SEVERITY:
        return (0, XID_SEVERITY.index(xid))
    return (1, xid)


def rank_xids(xids: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """(xid, count, last seen) ordered for a reader: hardware by severity, then application
    by count."""
    return sorted(xids, key=lambda x: (xid_rank(x[0])[0],
                                       xid_rank(x[0])[1] if not is_application_xid(x[0])
                                       else -x[1], x[0]))


def _xid_short(xid: int) -> str:
    return XID_SHORT.get(xid, "see NVIDIA's XID catalogue")


def _slurm_node(cp: ControlPlane, name: str, hostname: str | None) -> SlurmNodeView | None:
    try:
        nodes = slurm.nodes(cp)
    except GpuwardenError:  # Slurm not configured or unavailable: the doctor says so below
        return None
    return next((n for n in nodes if n.name in (name, hostname)), None)


def node_doctor(cp: ControlPlane, name: str) -> Analysis:
    """Everything that is wrong with a node, worst first: reachability, failed health
    checks (their figure and the expected one), GPUs down, hardware XIDs by severity (with
    counts), ECC, Slurm state and reason, throttling, application XIDs, open alerts."""
    node = live.get_node(cp, name)
    problems: list[tuple[float, str]] = []
    facts: list[tuple[float, str]] = []
    if not node.up:
        problems.append((_NODE_DOWN, "does not answer"))
        facts.append((_NODE_DOWN, f"The node daemon at {node.url} does not answer: "
                                  f"{node.error or 'no reply'} (last success "
                                  f"{_when(node.last_success)})."))
    elif node.health and node.health != "ok":
        problems.append((_HEALTH, f"daemon health {node.health}"))
        facts.append((_HEALTH, f"The node daemon reports {node.health}: "
                               f"{node.health_reason or ''}"))
    try:
        last_checks = check_svc.node_checks(cp, name, history=0).last
    except NotFoundError:  # not in the inventory (a node of the live view only)
        last_checks = []
    bad_checks = [c for c in last_checks if c.verdict in ("fail", "warn")]
    for c in bad_checks:
        if c.verdict == "fail":
            problems.append((_CHECK, f"check {c.name} failed: {c.figure} (expected "
                                     f"{c.expected})"))
        facts.append((_CHECK if c.verdict == "fail" else _HEALTH,
                      f"Health check {c.name} {'failed' if c.verdict == 'fail' else 'warns'} "
                      f"({_when(c.at)}): {c.figure}; expected {c.expected}."))
    try:
        xids = live.gpu_xids(cp, name)
    except NotFoundError:
        xids = {}
    gpu_rows = []
    for g in node.gpu_list:
        detail = live.get_gpu(cp, name, g.index) if node.up else None
        counts = rank_xids(xids.get(g.index, []))
        if not counts and g.xid_errors and g.last_xid:
            counts = [(g.last_xid, g.xid_errors, 0.0)]
        row: dict[str, Any] = {"gpu": g.index, "state": g.state, "up": g.up,
                               "xid_errors": g.xid_errors, "last_xid": g.last_xid,
                               "xids": {x: c for x, c, _ in counts},
                               "throttle": g.throttle_reasons, "temperature_c": g.temperature_c}
        if not g.up and node.up:
            problems.append((_GPU_DOWN, f"gpu{g.index} down"))
            facts.append((_GPU_DOWN, f"gpu{g.index} is down: it does not answer NVML "
                                     f"({g.error or 'unknown error'}); drain the node and "
                                     "check the GPU."))
        hardware = [x for x in counts if not is_application_xid(x[0])]
        application = [x for x in counts if is_application_xid(x[0])]
        for xid, count, _seen in hardware:  # across GPUs too: the worst XID first
            kind, order = xid_rank(xid)
            problems.append((_HW_XID + kind / 10 + order / 1000,
                             f"gpu{g.index} hardware XID {xid} ×{count} ({_xid_short(xid)})"))
        if application:
            problems.append((_APP_XID, f"gpu{g.index} application XIDs " + ", ".join(
                f"{xid} ×{count}" for xid, count, _ in application)))
        for xid, count, seen in counts:
            facts.append((_HW_XID if (xid, count, seen) in hardware else _APP_XID,
                          f"gpu{g.index}: {describe_xid(xid)} — {count} time(s)"
                          + (f", last {_when(seen)}" if seen else "") + "."))
        if counts and g.last_xid and len(counts) > 1:
            facts.append((_APP_XID, f"gpu{g.index}: the latest XID is {g.last_xid}; "
                                    f"{g.xid_errors} XID error(s) in all."))
        thermal = sorted(set(g.throttle_reasons) & THERMAL)
        if thermal:
            problems.append((_THERMAL, f"gpu{g.index} thermal throttling"))
            facts.append((_THERMAL, f"gpu{g.index} is throttled ({', '.join(thermal)}) at "
                                    f"{g.temperature_c or 0:.0f} °C, SM clock "
                                    f"{g.sm_clock_mhz or 0:.0f} MHz."))
        elif g.throttle_reasons:
            facts.append((_THERMAL, f"gpu{g.index} clock events: "
                                    f"{', '.join(g.throttle_reasons)}."))
        if detail is not None:
            ecc = {k: v for k, v in detail.fields.items() if k in ECC_FIELDS and v}
            row["ecc"] = ecc
            for key, value in sorted(ecc.items()):
                if key in SERIOUS_ECC:
                    problems.append((_ECC, f"gpu{g.index} ECC"))
                facts.append((_ECC, f"gpu{g.index}: {value:g} {ECC_FIELDS[key]}."))
        gpu_rows.append(row)
    snode = _slurm_node(cp, name, node.hostname)
    if snode is not None:
        state = snode.state + ("+" + "+".join(snode.flags) if snode.flags else "")
        line = f"Slurm: {snode.name} is {state}, {snode.gpus_alloc} of {snode.gpus_total} GPUs " \
               "allocated"
        if snode.reason:
            line += f", reason {_q(snode.reason)} since {_when(snode.reason_time)}"
        facts.append((_SLURM, line + "."))
        if _slurm_trouble(snode):
            problems.append((_SLURM, f"Slurm {state}"
                                     + (f" ({_q(snode.reason)})" if snode.reason else "")))
    open_alerts = [a for a in alert_svc.list_alerts(cp)
                   if a.state in ("pending", "firing") and (a.subject == name
                                                             or a.subject.startswith(name + "/"))]
    ordered = [p for _, p in sorted(problems, key=lambda p: p[0])]
    ordered = list(dict.fromkeys(ordered))
    lines = [f for _, f in sorted(facts, key=lambda f: f[0])]
    lines += [f"Alert {a.state}: {a.rule} ({a.severity}) — {a.summary}" for a in open_alerts]
    if ordered:
        summary = f"{name}: " + "; ".join(ordered) + "."
    else:
        summary = (f"{name} looks healthy: it answers, {node.gpus_up} of {node.gpus} GPUs up, no "
                   "XIDs, no thermal throttling, no ECC errors"
                   + (", Slurm state " + snode.state if snode else "") + ".")
    return Analysis(kind="node", subject=name, summary=summary, facts=lines,
                    data={"up": node.up, "problems": ordered, "gpus": gpu_rows,
                          "slurm": snode.model_dump() if snode else None,
                          "checks": [c.model_dump() for c in bad_checks],
                          "alerts": [a.id for a in open_alerts]})


# -- how efficient were these jobs -------------------------------------------------------------


async def job_efficiency(cp: ControlPlane, *, job_id: int | None = None,
                         user: str | None = None, days: float = 7.0) -> Analysis:
    """GPU utilization over jobs' lives (one job, or a user's jobs of the last ``days``,
    finished ones included), GPU-hours, $ and the idle share's $: each job's report
    (services.jobreport: Slurm's time bounds, GPUs x elapsed, the cost model)."""
    end = cp.clock()
    subject = f"job {job_id}" if job_id is not None else f"user {user}"
    history = {u.job_id: u for u in await slurm.job_history(
        cp, job_id=job_id, user=user, start=end - days * 86400, end=end)}
    try:
        queue = {j.job_id: j for j in slurm.jobs(cp, user=user)}
    except GpuwardenError:  # Slurm away: the stored history still answers
        queue = {}
    if job_id is not None:
        targets = [job_id]
    else:
        targets = sorted({int(k) for k in history if k.isdigit()}
                         | {j for j, q in queue.items() if q.state == "RUNNING"
                            and (q.gpus_allocated or q.gpus_requested)})
    rows: list[dict[str, Any]] = []
    facts: list[str] = []
    for jid in targets:
        h, q = history.get(str(jid)), queue.get(jid)
        if h is None and q is not None and q.state == "RUNNING":
            # started since the history was read: its report measures it the same way
            found = await jobreport.job_report(cp, jid)
            h = JobUsage(job_id=str(jid), user=found.user, partition=found.partition,
                         state=found.state, gpus=[f"{g.node}/{g.index}" for g in found.per_gpu],
                         gpu_count=found.gpus, first_seen=found.start_time or 0.0,
                         last_seen=found.end_time or found.generated_at,
                         gpu_hours=round(found.gpu_hours, 4),
                         mean_utilization=found.mean_utilization, cost=round(found.cost, 4),
                         idle_cost=round(found.wasted, 4))
        state = q.state if q else (h.state if h is not None and h.state != "UNKNOWN"
                                   else "finished")
        name = q.name if q else ""
        label = f"Job {jid}" + (f" {_q(name)}" if name else "")
        if h is not None:
            gpus = h.gpu_count or len(h.gpus)
            rows.append({"job_id": jid, "name": name, "user": h.user, "state": state,
                         "gpus": gpus, "gpu_hours": h.gpu_hours,
                         "mean_utilization": h.mean_utilization, "cost": h.cost,
                         "idle_cost": h.idle_cost, "first_seen": h.first_seen,
                         "last_seen": h.last_seen})
            facts.append(
                f"{label} ({h.user}, {state.lower()}): {gpus} GPU(s), "
                f"{h.gpu_hours:.2f} GPU-hours from {_when(h.first_seen)} to "
                + ("now" if state == "RUNNING" else _when(h.last_seen))
                + ", mean utilization "
                + (f"{h.mean_utilization:.0f}%" if h.mean_utilization is not None
                   else "unknown")
                + f", {_dollars(h.cost)} of GPU time, {_dollars(h.idle_cost)} of it idle.")
        elif q is not None:
            facts.append(f"{label} ({q.user}) is {q.state}: it has used no GPU yet.")
        else:
            facts.append(f"Job {jid} is neither in Slurm's queue nor in the stored history of "
                         f"the last {days:g} days.")
    measured = [r for r in rows if r["mean_utilization"] is not None]
    if not rows:
        summary = (f"No GPU use recorded for {subject} in the last {days:g} days"
                   + (" and no running jobs." if user else "."))
    else:
        gpu_hours = sum(r["gpu_hours"] for r in rows)
        weighted = (sum(r["mean_utilization"] * r["gpu_hours"] for r in measured)
                    / sum(r["gpu_hours"] for r in measured)) if measured and sum(
                        r["gpu_hours"] for r in measured) else None
        running = sum(1 for r in rows if r["state"] == "RUNNING")
        summary = (f"{subject}, last {days:g} days: {len(rows)} job(s) ({running} running), "
                   f"{gpu_hours:.2f} GPU-hours, mean GPU utilization "
                   + (f"{weighted:.0f}%" if weighted is not None else "unknown")
                   + f", {_dollars(sum(r['cost'] for r in rows))} of GPU time, "
                   f"{_dollars(sum(r['idle_cost'] for r in rows))} of it idle.")
    return Analysis(kind="efficiency", subject=subject, summary=summary, facts=facts,
                    data={"days": days, "jobs": rows})


def _slurm_trouble(node: SlurmNodeView) -> bool:
    """Whether Slurm holds the node out of work: down, drained or draining, failing, not
    responding (the nodes ``sinfo -R`` lists)."""
    return (node.state in ("down", "drained", "draining", "fail", "failing")
            or bool({"DRAIN", "FAIL", "NOT_RESPONDING"} & set(node.flags)))


def _slurm_state(node: SlurmNodeView) -> str:
    """The node's state in sinfo's words (%T): drained / draining (DRAIN on an idle or a
    busy node), down, ... with the flags that matter."""
    if "DRAIN" in node.flags and node.state not in ("down", "drained", "draining"):
        base = "draining" if node.state in ("allocated", "mixed", "completing") else "drained"
    else:
        base = node.state
    extra = [f.lower().replace("_", " ") for f in node.flags if f in ("NOT_RESPONDING", "FAIL")]
    return base + (f" ({', '.join(extra)})" if extra else "")


MAX_ALERTS_SHOWN = 25


def _alert_line(a: Any) -> str:
    marks = [" (silenced)" if a.silenced else "",
             f" (acknowledged by {a.acknowledged_by})" if a.acknowledged_by else ""]
    return (f"{a.severity}: {a.rule} on {a.subject}, since {_when(a.fired_at or a.started_at)}"
            f"{''.join(marks)} — {a.summary}")


def alert_list(cp: ControlPlane) -> Analysis:
    """The alerts firing now (what ``gpuwarden alerts`` and ``GET /api/v1/alerts?state=firing``
    list), the most severe first, each with its subject and summary; silenced ones said so."""
    firing = alert_svc.list_alerts(cp, state="firing")
    rank = {"critical": 0, "warning": 1, "info": 2}
    firing.sort(key=lambda a: (rank.get(a.severity, 3), -(a.fired_at or a.started_at)))
    by = defaultdict(int)
    for a in firing:
        by[a.severity] += 1
    if firing:
        summary = (f"{len(firing)} alert(s) firing: "
                   + ", ".join(f"{by[s]} {s}" for s in ("critical", "warning", "info") if by[s])
                   + ".")
    else:
        summary = "No alert is firing."
    facts = [_alert_line(a) for a in firing[:MAX_ALERTS_SHOWN]]
    if len(firing) > MAX_ALERTS_SHOWN:
        facts.append(f"... and {len(firing) - MAX_ALERTS_SHOWN} more (gpuwarden alerts lists "
                     "them all).")
    return Analysis(kind="alerts", subject="alerts", summary=summary, facts=facts,
                    data={"firing": [a.id for a in firing], "by_severity": dict(by)})


def cluster_summary(cp: ControlPlane) -> Analysis:
    """The overview in words: nodes, GPUs by state, cost, alerts, Slurm queue."""
    o = live.overview(cp)
    facts = [f"Nodes: {o.nodes.up} up, {o.nodes.down} down of {o.nodes.total}.",
             f"GPUs: {o.gpus.busy} busy, {o.gpus.allocated_idle} allocated-idle, "
             f"{o.gpus.idle} idle, {o.gpus.down} down of {o.gpus.total}.",
             f"Cost {_dollars(o.cost_per_hour)}/hr, of which {_dollars(o.waste_per_hour)}/hr "
             "on idle GPUs.",
             f"{o.alerts_active} alert(s) firing."]
    down = [n for n in live.list_nodes(cp) if not n.up]
    if down:
        facts.append("Down: " + "; ".join(f"{n.name} ({_q(n.error or 'no answer')})"
                                          for n in down) + ".")
    if o.slurm:
        facts.append(f"Slurm: {o.slurm.running} running, {o.slurm.pending} pending jobs.")
        try:
            troubled = [n for n in slurm.nodes(cp) if _slurm_trouble(n)]
        except GpuwardenError:
            troubled = []
        if troubled:  # what `sinfo -R` lists: the nodes Slurm holds down or drained, and why
            facts.append("Slurm nodes down or drained (sinfo -R): " + "; ".join(
                f"{n.name} {_slurm_state(n)}" + (f" ({_q(n.reason)})" if n.reason else "")
                for n in troubled) + ".")
        else:
            facts.append("Slurm holds no node down or drained.")
    elif o.slurm_error:
        facts.append(f"Slurm: {o.slurm_error}")
    mean = f"{o.utilization_mean:.0f}%" if o.utilization_mean is not None else "unknown"
    return Analysis(kind="overview", subject="cluster",
                    summary=f"Cluster {o.cluster}: {o.gpus.total} GPUs, mean utilization "
                            f"{mean}.", facts=facts, data=o.model_dump())


MAX_JOBS_SHOWN = 25  # job lines in a queue answer; the rest are counted
FINISHED_ASKED = {"FAILED", "COMPLETED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                  "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def job_list(cp: ControlPlane, *, states: frozenset[str] = frozenset(), user: str | None = None,
             node: str | None = None) -> Analysis:
    """The queue in words, meaning what ``squeue`` means: with no ``states``, every job Slurm
    still holds (pending, running, completing, suspended: what plain ``squeue`` lists), else
    the jobs in those states (``RUNNING`` = ``squeue -t R``); finished states come from the
    accounting window (``sacct``).  ``user``/``node``: only that user's jobs, only jobs on
    that node.  A line per job (its owner, state, nodes or pending reason, GPUs, time)."""
    snap = slurm.summary(cp)
    jobs = slurm.jobs(cp)
    if states:
        chosen = [j for j in jobs if j.state in states]
    else:
        chosen = [j for j in jobs if not j.finished and j.state in LIVE_STATES]
    if user is not None:
        chosen = [j for j in chosen if j.user == user]
    if node is not None:
        chosen = [j for j in chosen if node in j.nodes]
    chosen.sort(key=lambda j: (j.state != "RUNNING", j.state != "PENDING", j.job_id))
    counts: dict[str, int] = defaultdict(int)
    for j in chosen:
        counts[j.state] += 1
    whose = f" of {user}" if user else ""
    where = f" on {node}" if node else ""
    order = sorted(counts, key=lambda s: (s != "RUNNING", s != "PENDING", s))
    breakdown = ", ".join(f"{counts[s]} {s.lower()}" for s in order)
    n = len(chosen)
    jobs_word = f"{n} job{'' if n == 1 else 's'}{whose}"
    if not states:
        summary = (f"{jobs_word}{where} in the queue: {breakdown}." if chosen else
                   f"No job{whose}{where} in the queue (squeue lists none).")
    elif not chosen:
        asked = " or ".join(sorted({s.lower() for s in states}))
        summary = f"No job{whose} {asked}{where}" + (
            " in Slurm's accounting window." if states & FINISHED_ASKED else ".")
    elif len(counts) == 1:
        summary = f"{jobs_word} {order[0].lower()}{where}."
    else:
        summary = f"{jobs_word}{where}: {breakdown}."
    now = cp.clock()
    facts = [_job_line(j, now) for j in chosen[:MAX_JOBS_SHOWN]]
    if len(chosen) > MAX_JOBS_SHOWN:
        facts.append(f"... and {len(chosen) - MAX_JOBS_SHOWN} more (GET /api/v1/slurm/jobs "
                     "lists them all).")
    if states & FINISHED_ASKED and not snap.accounting:
        facts.append("Slurm accounting (slurmdbd) does not answer: finished jobs are the ones "
                     "slurmctld still holds (MinJobAge), not sacct's.")
    facts.append(f"As Slurm had it at {dt.datetime.fromtimestamp(snap.collected_at):%H:%M:%S} "
                 "(gpuwarden's last Slurm poll).")
    subject = " ".join(filter(None, ["jobs", user, node])) or "jobs"
    return Analysis(kind="jobs", subject=subject, summary=summary, facts=facts,
                    data={"states": sorted(states), "user": user, "node": node,
                          "counts": dict(counts), "jobs": [j.job_id for j in chosen],
                          "collected_at": snap.collected_at})


def _job_line(job: SlurmJobView, now: float) -> str:
    head = f"Job {job.job_id} {_q(job.name)} ({job.user}, {job.partition}): {job.state}"
    gpus = job.gpus_allocated or job.alloc_gpus or job.gpus_requested
    gpu_text = f", {gpus} GPU(s)" if gpus else ""
    if job.state == "PENDING":
        asks = (f"{job.gpus_requested} GPU(s)" if job.gpus_requested else
                f"no GPU ({job.num_cpus or 'some'} CPU(s))")
        return (f"{head} ({job.reason}: {reasons.reason(job.reason).text}), asks for {asks} "
                f"on {max(job.num_nodes, 1)} node(s), waiting "
                f"{_duration(now - job.submit_time) if job.submit_time else 'unknown'}.")
    where = f" on {', '.join(job.nodes)}" if job.nodes else ""
    if job.finished:
        code, sig = _exit_status(job)
        how = (f", killed by {_signal_name(sig)}" if sig else
               f", exit code {code}" if code is not None else "")
        return f"{head}{where}{gpu_text}, ended {_when(job.end_time)}{how}."
    since = f", for {_duration(now - job.start_time)}" if job.start_time else ""
    return f"{head}{where}{gpu_text}{since}."


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
