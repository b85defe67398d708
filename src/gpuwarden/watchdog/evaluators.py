"""One evaluator per rule kind: given the view, the rule and the subjects already active
for it (for hysteresis), return the subjects whose condition holds now."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gpuwarden.slurm.reasons import explain
from gpuwarden.watchdog.rules import RuleSpec, format_duration
from gpuwarden.watchdog.view import ClusterView, LiveGpu

# Temperatures (C) at which each model starts to slow down, from NVIDIA's datasheets;
# a model not listed uses the default.
SLOWDOWN_C = {"H100": 87, "H200": 87, "A100": 85, "L4": 83, "RTX": 83}
DEFAULT_SLOWDOWN_C = 85
THROTTLE_REASONS = ("hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown",
                    "hw_power_brake_slowdown")


@dataclass(frozen=True, slots=True)
class Finding:
    subject: str
    labels: dict[str, str]
    value: float | None = None
    context: dict[str, Any] = field(default_factory=dict)


Evaluator = Callable[[ClusterView, RuleSpec, set[str]], list[Finding]]


def _gpu_labels(g: LiveGpu) -> dict[str, str]:
    return {"node": g.node, "gpu": str(g.index), "UUID": g.uuid}


def _gpu_context(g: LiveGpu) -> dict[str, Any]:
    return {"node": g.node, "gpu": g.index, "uuid": g.uuid, "model": g.name,
            "cost_per_hour": g.cost_per_hour}


def _up_gpus(view: ClusterView) -> Iterator[LiveGpu]:
    return (g for g in view.gpus if g.up)


def _below(value: float | None, rule: RuleSpec, active: bool) -> bool:
    """Below threshold, or (hysteresis) still below ``clear`` when already active."""
    if value is None or rule.threshold is None:
        return False
    limit = rule.clear if active and rule.clear is not None else rule.threshold
    return value < limit


def _above(value: float | None, rule: RuleSpec, active: bool) -> bool:
    if value is None or rule.threshold is None:
        return False
    limit = rule.clear if active and rule.clear is not None else rule.threshold
    return value > limit


def gpu_idle(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    out = []
    for g in _up_gpus(view):
        if g.jobs or (rule.costly_only and g.cost_per_hour <= 0):
            continue
        util = g.utilization
        if _below(util, rule, g.subject in active):
            out.append(Finding(g.subject, _gpu_labels(g), util,
                               {**_gpu_context(g), "utilization": util}))
    return out


def gpu_allocated_idle(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    out = []
    for g in _up_gpus(view):
        if not g.jobs:
            continue
        util = g.utilization
        no_process = not g.processes and not any(j.has_process for j in g.jobs)
        if _below(util, rule, g.subject in active):
            job = g.jobs[0]
            out.append(Finding(
                g.subject, {**_gpu_labels(g), "job_id": job.job_id, "user": job.user}, util,
                {**_gpu_context(g), "utilization": util, "job_id": job.job_id,
                 "user": job.user or "unknown user",
                 "no_process": " with no process on it" if no_process else ""}))
    return out


def _slowdown_temp(model: str) -> float:
    for key, temp in SLOWDOWN_C.items():
        if key in model:
            return temp
    return DEFAULT_SLOWDOWN_C


def thermal_throttle(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    out = []
    for g in _up_gpus(view):
        reasons = [r for r in THROTTLE_REASONS if g.clock_events.get(r)]
        temp = g.fields.get("DCGM_FI_DEV_GPU_TEMP")
        hot = temp is not None and rule.temperature_margin > 0 and (
            temp >= _slowdown_temp(g.name) - rule.temperature_margin)
        if reasons or hot:
            out.append(Finding(g.subject, _gpu_labels(g), temp,
                               {**_gpu_context(g), "temperature": temp or 0.0,
                                "reasons": ", ".join(reasons) or "near its slowdown temperature"}))
    return out


def xid(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    """A recent XID of the rule's class; firing ``keep_firing_for`` after the last one, or
    (``until_checks_pass``) until the node's checks pass after it."""
    out = []
    window = max(rule.keep_firing_for, 1.0)
    for g in view.gpus:
        for x in g.xids:
            if x.kind != rule.xid_class:
                continue
            seen = x.last_seen
            if rule.until_checks_pass:
                if seen <= view.checks_passed.get(g.node, 0.0):
                    continue
            elif view.now - seen > window:
                continue
            job_id, user = (g.jobs[0].job_id, g.jobs[0].user) if g.jobs else (None, None)
            in_job = (f"in job {job_id}" + (f" of {user}" if user else "") if job_id
                      else "with no job on the GPU")
            out.append(Finding(
                f"{g.subject}/xid{x.xid}",
                {**_gpu_labels(g), "xid": str(x.xid), "user": str(user or "")},
                float(x.xid),
                {**_gpu_context(g), "xid": x.xid, "count": x.count,
                 "job_id": job_id or "none", "user": user or "nobody", "in_job": in_job}))
    return out


def _field_rule(field_name: str) -> Evaluator:
    def evaluate(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
        out = []
        for g in _up_gpus(view):
            value = g.fields.get(field_name)
            if value:
                out.append(Finding(g.subject, _gpu_labels(g), value,
                                   {**_gpu_context(g), "count": value}))
        return out

    return evaluate


def gpu_lost(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    up_nodes = {n.name for n in view.nodes if n.up}
    return [Finding(g.subject, _gpu_labels(g), None, {**_gpu_context(g), "error": g.error})
            for g in view.gpus if not g.up and g.node in up_nodes]


def gpu_memory_full(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    out = []
    for g in _up_gpus(view):
        used = g.fields.get("DCGM_FI_DEV_FB_USED")
        total = g.fields.get("DCGM_FI_DEV_FB_TOTAL")
        if used is None or not total:
            continue
        percent = 100.0 * used / total
        if _above(percent, rule, g.subject in active):
            out.append(Finding(g.subject, _gpu_labels(g), percent,
                               {**_gpu_context(g), "percent": percent}))
    return out


def node_down(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    return [Finding(n.name, {"node": n.name}, 0.0, {"node": n.name, "error": n.error})
            for n in view.nodes if not n.up]


def node_version(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    """Nodes whose gpuwarden is not the control plane's (compared at scrape time)."""
    return [Finding(n.name, {"node": n.name}, None, {"node": n.name,
                                                      "mismatch": n.version_mismatch})
            for n in view.nodes if n.version_mismatch]


def slurm_node_state(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    if view.slurm is None:
        return []
    wanted = {s.lower() for s in rule.states}
    out = []
    for node in view.slurm.nodes:
        states = {node.state.lower()} | {f.lower() for f in node.flags}
        hit = sorted(states & wanted)
        if hit:
            name = node.name
            out.append(Finding(f"slurm/{name}", {"slurm_node": name, "state": hit[0]}, None,
                               {"node": name, "state": "+".join(hit),
                                "reason": node.reason or "no reason given"}))
    return out


def job_pending(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    if view.slurm is None:
        return []
    default = rule.after.get("default", 3600.0)
    out = []
    for job in view.slurm.jobs:
        if not job.is_pending:
            continue
        reason = job.reason or "None"
        code = reason.split(",")[0].split("(")[0].strip()
        limit = rule.after.get(code, default)
        waited = view.now - float(job.submit_time or view.now)
        if waited < limit:
            continue
        out.append(Finding(
            f"job/{job.job_id}", {"job_id": str(job.job_id), "user": job.user, "reason": code},
            waited,
            {"job_id": job.job_id, "user": job.user, "reason": code,
             "pending_for": format_duration(waited), "explanation": explain(reason),
             "partition": job.partition}))
    return out


def job_completing(view: ClusterView, rule: RuleSpec, active: set[str]) -> list[Finding]:
    if view.slurm is None:
        return []
    return [Finding(f"job/{j.job_id}", {"job_id": str(j.job_id), "user": j.user}, None,
                    {"job_id": j.job_id, "user": j.user,
                     "nodes": ",".join(j.nodes) or "unknown nodes"})
            for j in view.slurm.jobs if j.state == "COMPLETING"]


EVALUATORS: dict[str, Evaluator] = {
    "gpu_idle": gpu_idle,
    "gpu_allocated_idle": gpu_allocated_idle,
    "thermal_throttle": thermal_throttle,
    "xid": xid,
    "ecc_uncorrectable": _field_rule("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
    "row_remap_failure": _field_rule("DCGM_FI_DEV_ROW_REMAP_FAILURE"),
    "gpu_lost": gpu_lost,
    "gpu_memory_full": gpu_memory_full,
    "node_down": node_down,
    "node_version": node_version,
    "slurm_node_state": slurm_node_state,
    "job_pending": job_pending,
    "job_completing": job_completing,
}
