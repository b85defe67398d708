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
from collections import defaultdict
from typing import Any

from pydantic import Field

from gpuwarden.agent.fence import quote
from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.gpu.xids import describe_xid
from gpuwarden.services import alerts as alert_svc
from gpuwarden.services import cluster, slurm
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import GpuView, Out, SlurmJobView, SlurmNodeView
from gpuwarden.slurm.reasons import explain

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


def explain_pending(cp: ControlPlane, job_id: int) -> Analysis:
    """Why a job waits: Slurm's reason in plain words, and the nodes and jobs behind it."""
    jobs = slurm.jobs(cp)
    job = _find_job(jobs, job_id)
    subject = f"job {job_id}"
    if job is None:
        return Analysis(kind="pending", subject=subject,
                        summary=f"Job {job_id} is not in Slurm's queue: it finished more than "
                                "MinJobAge ago, or it never existed.",
                        data={"found": False})
    base = [f"Job {job.job_id} {_q(job.name)} of user {job.user} in partition "
            f"{job.partition} is {job.state}."]
    if job.state != "PENDING":
        where = ", ".join(job.nodes) or "no node yet"
        return Analysis(kind="pending", subject=subject,
                        summary=f"Job {job_id} is not pending: it is {job.state} ({where}).",
                        facts=[*base, f"Started {_when(job.start_time)} on {where}."],
                        data={"found": True, "state": job.state, "nodes": job.nodes})
    nodes = {n.name: n for n in slurm.nodes(cp)}
    parts = set(job.partition.split(","))
    members = [n for n in nodes.values() if parts & set(n.partitions)] or list(nodes.values())
    per_node = math.ceil(job.gpus_requested / max(job.num_nodes, 1)) if job.gpus_requested else 0
    want_nodes = max(job.num_nodes, 1)
    facts = [*base, f"Slurm's reason: {job.reason} — {explain(job.reason)}."]
    if job.gpus_requested:
        facts.append(f"It asks for {job.gpus_requested} GPU(s) on {want_nodes} node(s) "
                     f"({per_node} per node).")
    held: dict[str, list[SlurmJobView]] = defaultdict(list)
    for j in jobs:
        if j.state == "RUNNING":
            for name in j.nodes:
                held[name].append(j)
    node_rows: list[dict[str, Any]] = []
    for n in sorted(members, key=lambda n: n.name):
        usable = (n.state not in ("down", "drained", "draining")
                  and not {"DRAIN", "NOT_RESPONDING"} & set(n.flags))
        node_rows.append({"node": n.name, "state": n.state, "flags": n.flags,
                          "reason": n.reason, "gpus_total": n.gpus_total,
                          "gpus_alloc": n.gpus_alloc, "gpus_free": n.gpus_idle,
                          "fits": usable and n.gpus_idle >= per_node,
                          "held_by": [{"job_id": h.job_id, "user": h.user,
                                       "gpus": _gpus_on(h, n.name),
                                       "ends": _expected_end(h)} for h in held[n.name]]})
    fitting = [r for r in node_rows if r["fits"]]
    blocked = sorted((r for r in node_rows if not r["fits"] and r["gpus_total"] >= per_node
                      and r["held_by"]),
                     key=lambda r: min((e["ends"] or float("inf")) for e in r["held_by"]))
    fit_shown = fitting[:MAX_NODES_SHOWN // 3]
    shown = fit_shown + blocked[:MAX_NODES_SHOWN - len(fit_shown)]
    for r in shown:
        line = (f"{r['node']}: {r['state']}{'+' + '+'.join(r['flags']) if r['flags'] else ''}"
                f", {r['gpus_alloc']} of {r['gpus_total']} GPUs allocated, {r['gpus_free']} "
                "free")
        if r["reason"]:
            line += f", reason {_q(r['reason'])}"
        if r["held_by"]:
            line += "; held by " + ", ".join(
                f"job {h['job_id']} ({h['user']}, {h['gpus']} GPU(s), ends "
                f"{_when(h['ends'])})" for h in r["held_by"])
        facts.append(line)
    if len(node_rows) > len(shown):
        facts.append(f"{len(node_rows)} node(s) in the partition; {len(fitting)} could take "
                     f"it now, {len(blocked)} are busy with jobs (the {len(shown)} most "
                     "relevant are listed).")
    fit_now = [r["node"] for r in fitting]
    never = [r["node"] for r in node_rows if r["gpus_total"] >= per_node]
    summary = f"Job {job_id} is pending ({job.reason}): {explain(job.reason)}."
    if job.reason in ("Resources", "Priority", "None") and per_node:
        if len(never) < want_nodes:
            summary = (f"Job {job_id} can never start as asked: it wants {want_nodes} node(s) "
                       f"with {per_node} GPUs each and partition {job.partition} has "
                       f"{len(never)} such node(s).")
        elif len(fit_now) >= want_nodes and job.reason == "Priority":
            summary += " Enough GPUs are free now; higher-priority jobs go first."
        else:
            ends = sorted(e["ends"] for r in blocked for e in r["held_by"] if e["ends"])
            summary = (f"Job {job_id} is pending for {job.reason}: it needs {want_nodes} "
                       f"node(s) with {per_node} free GPUs each; {len(fit_now)} node(s) have "
                       f"that now ({', '.join(fit_now[:5]) or 'none'}"
                       f"{', ...' if len(fit_now) > 5 else ''}).")
            holders = [e["job_id"] for r in blocked for e in sorted(
                r["held_by"], key=lambda e: e["ends"] or float("inf"))]
            holders = list(dict.fromkeys(holders))
            if holders:
                summary += (" GPUs are held by job(s) " + ", ".join(map(str, holders[:10]))
                            + (f" and {len(holders) - 10} more" if len(holders) > 10 else "")
                            + ".")
            if ends:
                needed = max(0, want_nodes - len(fit_now))
                if needed and len(ends) >= needed:
                    summary += (f" Earliest start if those jobs run to their time limit: "
                                f"{_when(ends[needed - 1])}.")
    if job.reason == "Priority":
        ahead = [j for j in jobs if j.state == "PENDING" and j.job_id != job.job_id
                 and set(j.partition.split(",")) & parts
                 and (j.priority or 0) >= (job.priority or 0)]
        facts.append(f"{len(ahead)} pending job(s) in the partition rank at or above it: "
                     + ", ".join(str(j.job_id) for j in ahead[:10]))
    unavailable = [r for r in node_rows if r["state"] in ("down", "drained", "draining")
                   or "DRAIN" in r["flags"] or "NOT_RESPONDING" in r["flags"]]
    if unavailable and job.reason in ("ReqNodeNotAvail", "NodeDown", "Resources"):
        facts.append(f"{len(unavailable)} unavailable node(s): " + ", ".join(
            f"{r['node']} ({r['state']}{', reason ' + _q(r['reason']) if r['reason'] else ''})"
            for r in unavailable[:MAX_NODES_SHOWN]))
    if job.reason.startswith("JobHeld"):
        facts.append(f"Release it with: scontrol release {job.job_id} (or the API's release "
                     "action).")
    if job.submit_time:
        waited = max(0.0, cp.clock() - job.submit_time)
        facts.append(f"Submitted {_when(job.submit_time)}, waiting {waited / 60:.0f} min.")
    return Analysis(kind="pending", subject=subject, summary=summary, facts=facts,
                    data={"found": True, "job_id": job.job_id, "name": job.name,
                          "comment": job.comment, "reason": job.reason,
                          "gpus_per_node": per_node, "nodes_wanted": want_nodes,
                          "nodes_fitting_now": fit_now[:50],
                          "nodes": shown + unavailable[:MAX_NODES_SHOWN]})


# -- which GPUs are wasted -------------------------------------------------------------------


def waste_report(cp: ControlPlane, top_k: int = 20) -> Analysis:
    """Idle and allocated-but-idle GPUs with what they cost, by user and by node."""
    total, wasted = cluster.wasted_gpus(cp)
    per_hour = sum(g.cost_per_hour for g in wasted)
    today = cluster.waste_today(cp)
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


def _slurm_node(cp: ControlPlane, name: str, hostname: str | None) -> SlurmNodeView | None:
    try:
        nodes = slurm.nodes(cp)
    except NotFoundError:
        return None
    except Exception:  # Slurm unavailable: the doctor says so below
        return None
    return next((n for n in nodes if n.name in (name, hostname)), None)


def node_doctor(cp: ControlPlane, name: str) -> Analysis:
    """Everything that is wrong with a node: reachability, XIDs, throttling, ECC,
    temperature, Slurm state and reason, open alerts."""
    node = cluster.get_node(cp, name)
    problems: list[str] = []
    facts: list[str] = []
    if not node.up:
        problems.append("does not answer")
        facts.append(f"The node daemon at {node.url} does not answer: {node.error or 'no reply'}"
                     f" (last success {_when(node.last_success)}).")
    elif node.health and node.health != "ok":
        problems.append(f"daemon health {node.health}")
        facts.append(f"The node daemon reports {node.health}: {node.health_reason or ''}")
    gpu_rows = []
    for g in node.gpu_list:
        detail = cluster.get_gpu(cp, name, g.index) if node.up else None
        row: dict[str, Any] = {"gpu": g.index, "state": g.state, "xid_errors": g.xid_errors,
                               "last_xid": g.last_xid, "throttle": g.throttle_reasons,
                               "temperature_c": g.temperature_c}
        if not g.up and node.up:
            problems.append(f"gpu{g.index} down")
            facts.append(f"gpu{g.index} does not answer NVML: {g.error or 'unknown error'}.")
        if g.xid_errors:
            problems.append(f"gpu{g.index} XIDs")
            facts.append(f"gpu{g.index}: {g.xid_errors} XID error(s), last "
                         f"{describe_xid(g.last_xid) if g.last_xid else 'unknown'}.")
        thermal = sorted(set(g.throttle_reasons) & THERMAL)
        if thermal:
            problems.append(f"gpu{g.index} thermal throttling")
            facts.append(f"gpu{g.index} is throttled ({', '.join(thermal)}) at "
                         f"{g.temperature_c or 0:.0f} °C, SM clock {g.sm_clock_mhz or 0:.0f} MHz.")
        elif g.throttle_reasons:
            facts.append(f"gpu{g.index} clock events: {', '.join(g.throttle_reasons)}.")
        if detail is not None:
            ecc = {k: v for k, v in detail.fields.items() if k in ECC_FIELDS and v}
            row["ecc"] = ecc
            for key, value in sorted(ecc.items()):
                if key in SERIOUS_ECC:
                    problems.append(f"gpu{g.index} ECC")
                facts.append(f"gpu{g.index}: {value:g} {ECC_FIELDS[key]}.")
        gpu_rows.append(row)
    snode = _slurm_node(cp, name, node.hostname)
    if snode is not None:
        state = snode.state + ("+" + "+".join(snode.flags) if snode.flags else "")
        line = f"Slurm: {snode.name} is {state}, {snode.gpus_alloc} of {snode.gpus_total} GPUs " \
               "allocated"
        if snode.reason:
            line += f", reason {_q(snode.reason)} since {_when(snode.reason_time)}"
        facts.append(line + ".")
        if snode.state in ("down", "drained", "draining") or "DRAIN" in snode.flags \
                or "NOT_RESPONDING" in snode.flags:
            problems.append(f"Slurm {state}")
    open_alerts = [a for a in alert_svc.list_alerts(cp)
                   if a.state in ("pending", "firing") and (a.subject == name
                                                             or a.subject.startswith(name + "/"))]
    for a in open_alerts:
        facts.append(f"Alert {a.state}: {a.rule} ({a.severity}) — {a.summary}")
    if problems:
        summary = f"{name}: " + "; ".join(dict.fromkeys(problems)) + "."
    else:
        summary = (f"{name} looks healthy: it answers, {node.gpus_up} of {node.gpus} GPUs up, no "
                   "XIDs, no thermal throttling, no ECC errors"
                   + (", Slurm state " + snode.state if snode else "") + ".")
    return Analysis(kind="node", subject=name, summary=summary, facts=facts,
                    data={"up": node.up, "problems": list(dict.fromkeys(problems)),
                          "gpus": gpu_rows,
                          "slurm": snode.model_dump() if snode else None,
                          "alerts": [a.id for a in open_alerts]})


# -- how efficient were these jobs -------------------------------------------------------------


async def job_efficiency(cp: ControlPlane, *, job_id: int | None = None,
                         user: str | None = None, days: float = 7.0) -> Analysis:
    """GPU utilization over jobs' lives (one job, or a user's jobs of the last ``days``,
    finished ones included, from stored history), GPU-hours, $ and the idle share's $; a
    running job not in the history yet is measured from Slurm's view and its GPUs."""
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
                         | {j for j, q in queue.items() if q.state == "RUNNING"})
    rows: list[dict[str, Any]] = []
    facts: list[str] = []
    for jid in targets:
        h, q = history.get(str(jid)), queue.get(jid)
        state = q.state if q else "finished"
        name = q.name if q else ""
        label = f"Job {jid}" + (f" {_q(name)}" if name else "")
        if h is not None:
            rows.append({"job_id": jid, "name": name, "user": h.user, "state": state,
                         "gpus": len(h.gpus), "gpu_hours": h.gpu_hours,
                         "mean_utilization": h.mean_utilization, "cost": h.cost,
                         "idle_cost": h.idle_cost, "first_seen": h.first_seen,
                         "last_seen": h.last_seen})
            facts.append(
                f"{label} ({h.user}, {state.lower()}): {len(h.gpus)} GPU(s), "
                f"{h.gpu_hours:.2f} GPU-hours from {_when(h.first_seen)} to "
                f"{_when(h.last_seen)}, mean utilization "
                + (f"{h.mean_utilization:.0f}%" if h.mean_utilization is not None
                   else "unknown")
                + f", {_dollars(h.cost)} of GPU time, {_dollars(h.idle_cost)} of it idle.")
        elif q is not None and q.state == "RUNNING":
            detail = await slurm.job(cp, jid)
            eff = detail.efficiency
            mean = eff.mean_utilization if eff else None
            hours = (eff.end - eff.start) / 3600 if eff else 0.0
            cost = sum(g.cost_per_hour for g in detail.gpus) * hours
            idle = cost * (1 - (mean or 0) / 100) if mean is not None else 0.0
            rows.append({"job_id": jid, "name": name, "user": q.user, "state": state,
                         "gpus": len(detail.gpus), "gpu_hours": round(len(detail.gpus)
                                                                      * hours, 4),
                         "mean_utilization": mean, "cost": cost, "idle_cost": idle})
            facts.append(f"{label} ({q.user}, running): {len(detail.gpus)} GPU(s) for "
                         f"{hours:.2f} h, mean utilization "
                         + (f"{mean:.0f}%" if mean is not None else "unknown") + ".")
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


def cluster_summary(cp: ControlPlane) -> Analysis:
    """The overview in words: nodes, GPUs by state, cost, alerts, Slurm queue."""
    o = cluster.overview(cp)
    facts = [f"Nodes: {o.nodes.up} up, {o.nodes.down} down of {o.nodes.total}.",
             f"GPUs: {o.gpus.busy} busy, {o.gpus.allocated_idle} allocated-idle, "
             f"{o.gpus.idle} idle, {o.gpus.down} down of {o.gpus.total}.",
             f"Cost {_dollars(o.cost_per_hour)}/hr, of which {_dollars(o.waste_per_hour)}/hr "
             "on idle GPUs.",
             f"{o.alerts_active} alert(s) firing."]
    down = [n for n in cluster.list_nodes(cp) if not n.up]
    if down:
        facts.append("Down: " + "; ".join(f"{n.name} ({_q(n.error or 'no answer')})"
                                          for n in down) + ".")
    if o.slurm:
        facts.append(f"Slurm: {o.slurm.running} running, {o.slurm.pending} pending jobs.")
    elif o.slurm_error:
        facts.append(f"Slurm: {o.slurm_error}")
    mean = f"{o.utilization_mean:.0f}%" if o.utilization_mean is not None else "unknown"
    return Analysis(kind="overview", subject="cluster",
                    summary=f"Cluster {o.cluster}: {o.gpus.total} GPUs, mean utilization "
                            f"{mean}.", facts=facts, data=o.model_dump())
