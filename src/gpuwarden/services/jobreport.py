"""A report for every GPU job (``gpuwarden jobstats JOBID``, ``GET
/api/v1/slurm/jobs/{id}/report``, the end-of-job message), the way Princeton's Jobstats
reports one, with $.

The one way a job's usage is computed:

* **time bounds** are Slurm's: start and end (and elapsed) from the controller's snapshot
  (sacct with accounting, else squeue), never the span of the samples;
* **GPUs** are the ones ``gpuwarden_gpu_job_info`` showed holding the job (plus Slurm's
  ``gres_detail`` while it runs); their utilization and memory come from the metrics store
  at a step that fits the job's length (about ``POINTS`` steps, never under the scrape
  interval);
* **GPU-hours** are GPUs (Slurm's AllocTRES, else its request) x elapsed; **$** is each
  GPU's $/hr (its node's $/hr shared by its GPUs, as ``GpuView.cost_per_hour``) x elapsed;
  **$ wasted** is the share of each GPU's measured steps under
  ``idle_utilization_percent`` (the one definition of idle) of its $;
* **grades** use Jobstats' thresholds (``reports.grades``), **notes** its conditions: GPUs
  never used, idle GPUs of a multi-GPU job, low utilization, memory headroom (with the $/hr
  of a cheaper GPU that would fit, where the cost model prices one), a time limit far above
  the run time, a timeout.

When a GPU job ends, :class:`JobReports` (a background task of ``serve``) stores its
summary in the state database, once, and queues the end-of-job message to its owner in the
same transaction (``reports.end_of_job_message``), so neither repeats after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpuwarden.config import ReportsConfig
from gpuwarden.durations import format_duration
from gpuwarden.errors import ConflictError, GpuwardenError, NotFoundError
from gpuwarden.metrics.ingest import JOB_INFO
from gpuwarden.metrics.model import parse_selector
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.live import GpuPrice, gpu_prices, list_gpus
from gpuwarden.services.models import (
    GpuUsage,
    Grade,
    JobReport,
    NodeUsage,
    ReportNote,
    SlurmJobView,
)
from gpuwarden.state.jobreports import JobReportStore

if TYPE_CHECKING:
    from gpuwarden.watchdog.notify import Notifier

log = logging.getLogger(__name__)

POINTS = 240  # query steps over a job's life (a day: 6-minute steps)
MEMORY_STEPS = 4  # utilization steps per memory step (its peak is exact at any step)
SAFETY = 1.2  # memory a smaller GPU needs above the peak used (Jobstats' "with safety")
UTIL, FB_USED, FB_TOTAL = "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_TOTAL"
Key = tuple[str, int]  # (node, GPU index)


# -- what a report is made of ------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSeries:
    """One GPU's series over a job's life, one point per query step."""

    node: str
    index: int
    utilization: Sequence[tuple[float, float]] = ()
    memory_used: Sequence[tuple[float, float]] = ()  # per step, MiB (the store: its peak)
    memory_peak: Sequence[tuple[float, float]] = ()  # max per step, MiB
    memory_total_mib: float | None = None


@dataclass(frozen=True)
class Pricing:
    """What the cost model says about a job's GPUs: each GPU's $/hr and model, the $/hr of
    a GPU of the job that was not seen, and the GPU types it prices."""

    rates: Mapping[Key, float] = field(default_factory=dict)
    models: Mapping[Key, str] = field(default_factory=dict)
    default_rate: float = 0.0
    offers: Sequence[GpuPrice] = ()

    def rate(self, key: Key) -> float:
        return self.rates.get(key, self.default_rate)


def is_gpu_job(job: SlurmJobView) -> bool:
    return bool(job.alloc_gpus or job.gpus_allocated or job.gpus_requested or job.gpu_detail)


def job_bounds(job: SlurmJobView, now: float) -> tuple[float, float | None, float]:
    """Slurm's start, end (None while it runs) and elapsed seconds of a started job."""
    start = float(job.start_time or 0.0)
    end = float(job.end_time) if job.end_time and (job.finished or job.end_time <= now) \
        else None
    if job.elapsed_s is not None and end is not None:
        elapsed = float(job.elapsed_s)
    else:
        elapsed = max(0.0, (end if end is not None else now) - start)
    return start, end, elapsed


def gpu_count(job: SlurmJobView, seen: int) -> int:
    """GPUs the job held: sacct's AllocTRES, else what squeue says it holds or asked for,
    else the GPUs seen holding it."""
    if job.alloc_gpus is not None:
        return job.alloc_gpus
    return job.gpus_allocated or job.gpus_requested or seen


def query_step(span: float, min_step: float) -> tuple[float, int]:
    """A step that fits a job of ``span`` seconds (about POINTS of them, at least
    ``min_step``: the scrape interval; whole seconds, whole minutes from a minute on, as the
    store's rollups are) and how many steps cover the span."""
    step = max(min_step, span / POINTS)
    if step >= 60:
        step = 60.0 * math.ceil(step / 60.0)
    elif step >= 1:
        step = float(math.ceil(step))
    return step, max(1, math.ceil(span / step - 1e-9))


def _grade(metric: str, value: float | None, poor: float, fair: float) -> Grade:
    if value is None:
        grade = "unknown"
    else:
        grade = "poor" if value < poor else "fair" if value < fair else "good"
    return Grade.model_validate({"metric": metric, "grade": grade, "poor_below": poor,
                                 "fair_below": fair,
                                 "value": None if value is None else round(value, 1)})


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _gib(mib: float | None) -> str:
    return "unknown" if mib is None else f"{mib / 1024:.1f} GiB"


def _dollars(x: float) -> str:
    return f"${x:,.2f}"


def _names(keys: Sequence[Key], limit: int = 8) -> str:
    shown = ", ".join(f"{n}/{i}" for n, i in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def compose(job: SlurmJobView, series: Sequence[GpuSeries], pricing: Pricing,
            config: ReportsConfig, *, idle_threshold: float, step: float, now: float,
            with_series: bool = False, slurm_source: str | None = None) -> JobReport:
    """The report of ``job`` from its GPUs' series: pure (no store, no clock), so grades and
    notes are tested on synthetic series."""
    _, end, elapsed = job_bounds(job, now)
    hours = elapsed / 3600.0
    steps = max(1, math.ceil(elapsed / step - 1e-9)) if step > 0 else 1
    gpus = gpu_count(job, len(series))
    per_gpu: list[GpuUsage] = []
    for s in sorted(series, key=lambda s: (s.node, s.index)):
        util = [v for _, v in s.utilization]
        idle = sum(1 for v in util if v < idle_threshold)
        peaks = [v for _, v in (s.memory_peak or s.memory_used)]
        rate = pricing.rate((s.node, s.index))
        cost = rate * hours
        per_gpu.append(GpuUsage(
            node=s.node, index=s.index, model=pricing.models.get((s.node, s.index)),
            memory_total_mib=s.memory_total_mib, cost_per_hour=rate,
            mean_utilization=_mean(util),
            mean_memory_used_mib=_mean([v for _, v in s.memory_used]),
            peak_memory_used_mib=max(peaks) if peaks else None,
            idle_percent=100.0 * idle / len(util) if util else None,
            never_used=bool(util) and max(util) <= 0.0, samples=len(util),
            gpu_hours=round(hours, 6), cost=round(cost, 6),
            wasted=round(cost * idle / len(util), 6) if util else 0.0,
            utilization=[tuple(p) for p in s.utilization] if with_series else [],
            memory_used_mib=[tuple(p) for p in s.memory_used] if with_series else []))
    seen = len(per_gpu)
    # $/hr of the job's GPUs: those seen, plus the rest at the rate of its nodes' GPUs; seen
    # more GPUs than Slurm gave (a reused index): Slurm's count at the seen GPUs' mean rate
    if seen <= gpus:
        cost_per_hour = sum(g.cost_per_hour for g in per_gpu) + (gpus - seen) * \
            pricing.default_rate
        scale = 1.0
    else:
        cost_per_hour = gpus * sum(g.cost_per_hour for g in per_gpu) / seen
        scale = gpus / seen
    measured = [g for g in per_gpu if g.mean_utilization is not None]
    mean_util = _mean([g.mean_utilization for g in measured])  # type: ignore[misc]
    peaks = [g.peak_memory_used_mib for g in per_gpu if g.peak_memory_used_mib is not None]
    means = [g.mean_memory_used_mib for g in per_gpu if g.mean_memory_used_mib is not None]
    curve: dict[float, list[float]] = {}
    for s in series:
        for t, v in s.utilization:
            curve.setdefault(t, []).append(v)
    nodes: dict[str, list[GpuUsage]] = {}
    for g in per_gpu:
        nodes.setdefault(g.node, []).append(g)
    time_eff = None
    if job.finished and end is not None and job.time_limit_s:
        time_eff = min(100.0, 100.0 * elapsed / job.time_limit_s)
    report = JobReport(
        job_id=job.job_id, name=job.name, user=job.user, account=job.account,
        partition=job.partition, state=job.state, finished=job.finished,
        exit_code=job.exit_code, signal=job.signal, nodes=list(job.nodes),
        submit_time=job.submit_time, start_time=job.start_time, end_time=end,
        elapsed_s=elapsed, time_limit_s=job.time_limit_s,
        time_efficiency=None if time_eff is None else round(time_eff, 1),
        slurm_source=slurm_source or job.source, gpus=gpus,
        gpu_hours=round(gpus * hours, 6), cost_per_hour=round(cost_per_hour, 6),
        cost=round(cost_per_hour * hours, 6),
        wasted=round(scale * sum(g.wasted for g in per_gpu), 6),
        mean_utilization=mean_util, mean_memory_used_mib=_mean(means),
        peak_memory_used_mib=max(peaks) if peaks else None,
        idle_threshold_percent=idle_threshold, step=step,
        coverage=(min(1.0, sum(g.samples for g in per_gpu) / (steps * gpus))
                  if gpus else None),
        per_node=[NodeUsage(
            node=name, gpus=len(gs),
            mean_utilization=_mean([g.mean_utilization for g in gs
                                    if g.mean_utilization is not None]),
            peak_memory_used_mib=max((g.peak_memory_used_mib for g in gs
                                      if g.peak_memory_used_mib is not None), default=None),
            memory_total_mib=sum(g.memory_total_mib or 0 for g in gs) or None,
            cost=round(sum(g.cost for g in gs), 6),
            wasted=round(sum(g.wasted for g in gs), 6)) for name, gs in nodes.items()],
        per_gpu=per_gpu,
        utilization=[(t, sum(v) / len(v)) for t, v in sorted(curve.items())],
        generated_at=now)
    g = config.grades
    report.grades = [
        _grade("gpu_utilization", mean_util, g.gpu_utilization_poor, g.gpu_utilization_fair),
        _grade("time_efficiency", time_eff, g.time_efficiency_poor, g.time_efficiency_fair)]
    report.notes = notes(report, pricing, config)
    return report


def notes(r: JobReport, pricing: Pricing, config: ReportsConfig) -> list[ReportNote]:
    """Jobstats' notes for a GPU job, in its order (bold red first), with $."""
    out: list[ReportNote] = []
    long_enough = r.elapsed_s > config.min_runtime
    if r.gpus and not r.per_gpu:
        out.append(ReportNote(kind="no_data", severity="info", text=(
            "No GPU samples of this job are in the metrics store (its nodes were not "
            "scraped while it ran, or the store no longer keeps that time): utilization "
            "and waste are unknown; GPU-hours and $ come from Slurm's times.")))
        return out
    unused = [g for g in r.per_gpu if g.never_used]
    if unused and long_enough:
        keys = [(g.node, g.index) for g in unused]
        cost = sum(g.cost for g in unused)
        if r.gpus == 1:
            text = (f"This job did not use its GPU ({_names(keys)}: 0 % utilization at every "
                    f"sample): {_dollars(cost)} of GPU time bought nothing. Is the code "
                    "GPU-enabled? Fix this before running more jobs.")
        else:
            text = (f"This job did not use {len(unused)} of its {r.gpus} GPUs ({_names(keys)}:"
                    f" 0 % at every sample), {_dollars(cost)} of GPU time. "
                    + ("Is the code able to use more than one GPU? "
                       if r.gpus - len(unused) <= 1 else "")
                    + "Ask only for the GPUs it uses (--gres=gpu:N).")
        out.append(ReportNote(kind="unused_gpus", severity="warning", text=text,
                              saving_per_hour=round(sum(g.cost_per_hour for g in unused), 6)))
    idle = [g for g in r.per_gpu if not g.never_used and g.mean_utilization is not None
            and g.mean_utilization < r.idle_threshold_percent]
    if r.gpus > 1 and idle and long_enough:
        keys = [(g.node, g.index) for g in idle]
        out.append(ReportNote(kind="idle_gpus", severity="warning", text=(
            f"{len(idle)} of its {r.gpus} GPUs {'was' if len(idle) == 1 else 'were'} idle "
            f"(mean utilization under "
            f"{r.idle_threshold_percent:g} %): {_names(keys)}; "
            f"{'it' if len(idle) == 1 else 'they'} cost {_dollars(sum(g.cost for g in idle))}."),
            saving_per_hour=round(sum(g.cost_per_hour for g in idle), 6)))
    grade = next((g for g in r.grades if g.metric == "gpu_utilization"), None)
    if grade is not None and grade.value is not None and not (unused and len(unused) == r.gpus):
        if grade.grade == "poor":
            out.append(ReportNote(kind="low_utilization", severity="warning", text=(
                f"The overall GPU utilization of this job is only {grade.value:.0f} % "
                f"(under {grade.poor_below:g} %): {_dollars(r.wasted)} of its "
                f"{_dollars(r.cost)} went to GPU time under {r.idle_threshold_percent:g} %. "
                "Find out why (data loading, CPU-bound steps, a small batch) before the "
                "next run.")))
        elif grade.grade == "fair" and long_enough:
            out.append(ReportNote(kind="low_utilization", severity="info", text=(
                f"The overall GPU utilization of this job is {grade.value:.0f} %: somewhat "
                f"low (under {grade.fair_below:g} %).")))
    out += _memory_note(r, pricing, config, long_enough)
    eff = next((g for g in r.grades if g.metric == "time_efficiency"), None)
    if (eff is not None and eff.value is not None and r.state == "COMPLETED"
            and r.time_limit_s and eff.value < eff.fair_below
            and r.elapsed_s > 3 * config.min_runtime):
        out.append(ReportNote(
            kind="time_limit", severity="warning" if eff.value < eff.poor_below else "info",
            text=(f"This job needed only {eff.value:.0f} % of its "
                  f"{format_duration(r.time_limit_s)} time limit (it ran "
                  f"{format_duration(r.elapsed_s)}). Ask for less time (--time): shorter "
                  "requests start sooner and let Slurm backfill them.")))
    if r.state == "TIMEOUT":
        limit = format_duration(r.time_limit_s) if r.time_limit_s else "its"
        out.append(ReportNote(kind="timeout", severity="warning", text=(
            f"This job reached its {limit} time limit and Slurm ended it. If nothing else "
            "went wrong, ask for more time (--time) or save checkpoints, and resubmit.")))
    return out


def _memory_note(r: JobReport, pricing: Pricing, config: ReportsConfig,
                 long_enough: bool) -> list[ReportNote]:
    used = [g for g in r.per_gpu if not g.never_used and g.memory_total_mib]
    if not used or not long_enough or r.peak_memory_used_mib is None:
        return []
    total = min(g.memory_total_mib or 0.0 for g in used)
    peak = max(g.peak_memory_used_mib or 0.0 for g in used)
    if total <= 0 or 100.0 * peak / total >= config.memory_headroom_percent:
        return []
    need = peak * SAFETY
    rate = max(g.cost_per_hour for g in used)
    model = next((g.model for g in used if g.model), None)
    text = (f"Its GPUs used at most {_gib(peak)} of their {_gib(total)} of memory "
            f"({100.0 * peak / total:.0f} %): a GPU with {_gib(need)} would hold it.")
    fits = [o for o in pricing.offers if o.memory_total_mib >= need
            and o.cost_per_hour < rate and o.model != model]
    saving = None
    if fits:
        best = min(fits, key=lambda o: (o.cost_per_hour, o.memory_total_mib))
        per_gpu = rate - best.cost_per_hour
        saving = round(per_gpu * r.gpus, 6)
        text += (f" The {best.model} ({_gib(best.memory_total_mib)}, "
                 f"{_dollars(best.cost_per_hour)}/hr) would fit: {_dollars(per_gpu)}/hr less "
                 f"per GPU, {_dollars(saving)}/hr for this job.")
    else:
        text += (" The cost model prices only this fleet's GPUs and none of them is both "
                 "cheaper and big enough; with a price list of other GPU types it would "
                 "name one.")
    return [ReportNote(kind="memory_headroom", severity="info", text=text,
                       saving_per_hour=saving)]


# -- reading a job's series and prices ---------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _read(cp: ControlPlane, job: SlurmJobView, start: float, step: float, steps: int,
          held: set[Key], series: bool = False) -> tuple[set[Key], list[GpuSeries]]:
    """The job's GPUs (``held`` plus those ``gpuwarden_gpu_job_info`` showed holding it) and
    their series over (start, start + steps * step]: utilization (``avg``) one point per
    step, memory used (``max``: Jobstats' peak) one per MEMORY_STEPS steps (every step with
    ``series``, for charts).  Blocking.

    What it reads is kept small, so a day of a 64-GPU job stays within a few hundred ms:
    the job's GPUs come from the store's index of job-info series (read over the job's life
    only when the index holds more than Slurm gave the job: a job id Slurm reused), each
    GPU's memory total from the last step."""
    end = start + steps * step
    span = end - start + step
    selector = parse_selector(f'{JOB_INFO}{{job_id="{job.job_id}"}}')
    found = {(labels["node"], int(labels["gpu"])) for labels in cp.store.series(selector)
             if labels.get("node") and str(labels.get("gpu", "")).isdigit()}
    if len(found | held) > gpu_count(job, 0) > 0:
        found = {(s.labels["node"], int(s.labels["gpu"]))
                 for s in cp.store.range(selector, end, end, span, "max")
                 if any(v > 0 for _, v in s.points) and str(s.labels.get("gpu", "")).isdigit()}
    gpus = held | found
    if not gpus:
        return gpus, []
    names = _label("|".join(re.escape(n) for n in sorted({n for n, _ in gpus})))

    def read(metric: str, aggregation: str, a: float, b: float, st: float
             ) -> dict[Key, Sequence[tuple[float, float]]]:
        out = {}
        for s in cp.store.range(parse_selector(f'{metric}{{node=~"{names}"}}'), a, b, st,
                                aggregation):  # type: ignore[arg-type]
            with contextlib.suppress(KeyError, ValueError):
                key = (s.labels["node"], int(s.labels["gpu"]))
                if key in gpus:
                    out[key] = s.points
        return out

    util = read(UTIL, "avg", start + step, end, step)
    mem_steps = steps if series else max(1, math.ceil(steps / MEMORY_STEPS))
    mem_step = (end - start) / mem_steps  # the same span: no window reaches past the job
    peak = read(FB_USED, "max", start + mem_step, end, mem_step)
    total = read(FB_TOTAL, "last", end, end, step)
    if any(k not in total for k in peak):  # no sample in the last step: the whole life
        total = {**read(FB_TOTAL, "last", end, end, span), **total}
    return gpus, [GpuSeries(node, index, util.get((node, index), ()),
                            peak.get((node, index), ()), peak.get((node, index), ()),
                            total[(node, index)][-1][1] if total.get((node, index)) else None)
                  for node, index in sorted(gpus)
                  if (node, index) in util or (node, index) in peak]


def pricing(cp: ControlPlane, gpus: set[Key], nodes: Sequence[str]) -> Pricing:
    """Each GPU's $/hr and model from the live view; a node no longer scraped: its inventory
    $/hr over the GPUs the store knows it had."""
    rates: dict[Key, float] = {}
    models: dict[Key, str] = {}
    names = sorted({n for n, _ in gpus} | set(nodes))
    inventory = {n.name: n for n in cp.inventory.nodes()} if names else {}
    node_rates: list[float] = []
    for name in names:
        views = list_gpus(cp, node=name)
        for g in views:
            rates[(g.node, g.index)] = g.cost_per_hour
            models[(g.node, g.index)] = g.name
        if views:
            node_rates.append(views[0].cost_per_hour)
            continue
        inv = inventory.get(name)
        if inv is None or inv.cost_per_hour <= 0:
            continue
        known = {labels.get("gpu") for labels in
                 cp.store.series(parse_selector(f'{UTIL}{{node="{_label(name)}"}}'))}
        per_gpu = inv.cost_per_hour / max(1, len(known))
        node_rates.append(per_gpu)
        for key in gpus:
            if key[0] == name:
                rates[key] = per_gpu
    default = sum(node_rates) / len(node_rates) if node_rates else 0.0
    return Pricing(rates, models, default, gpu_prices(cp))


async def build_report(cp: ControlPlane, job: SlurmJobView, *, series: bool = False,
                       slurm_source: str | None = None) -> JobReport:
    """The live report of a started job (running or ended) from the metrics store."""
    if not job.start_time:
        raise ConflictError(f"job {job.job_id} has not started (it is {job.state}): it has "
                            "no report yet")
    now = cp.clock()
    start, _, elapsed = job_bounds(job, now)
    step, steps = query_step(elapsed, max(1.0, cp.config.scrape.interval))
    held = {(node, int(i)) for node, indices in job.gpu_detail.items() for i in indices}

    def read() -> tuple[list[GpuSeries], Pricing]:
        gpus, found = _read(cp, job, start, step, steps, held, series)
        return found, pricing(cp, gpus, job.nodes)

    found, prices = await asyncio.to_thread(read)
    return compose(job, found, prices, cp.config.reports,
                   idle_threshold=cp.config.idle_utilization_percent, step=step, now=now,
                   with_series=series, slurm_source=slurm_source)


# -- the report of a job id: stored, else live ---------------------------------------------------


def _store(cp: ControlPlane) -> JobReportStore:
    return JobReportStore(cp.db)


def stored_report(cp: ControlPlane, job_id: int) -> JobReport | None:
    found = _store(cp).get(cp.config.cluster, job_id)
    if found is None:
        return None
    return JobReport.model_validate({**found, "source": "stored"})


async def job_report(cp: ControlPlane, job_id: int, *, series: bool = False) -> JobReport:
    """A job's report: its stored summary when it has one (``series`` asks for the live
    one while Slurm still knows the job), else computed now from Slurm's snapshot and the
    metrics store."""
    from gpuwarden.services import slurm

    stored = await asyncio.to_thread(stored_report, cp, job_id)
    if stored is not None and not series:
        return stored
    try:
        job = slurm.find_job(cp, job_id)
    except GpuwardenError:
        if stored is not None:
            return stored
        raise
    if job is None:
        if stored is not None:
            return stored
        raise NotFoundError(slurm.missing_job_text(cp, job_id)
                            + "; gpuwarden has no stored report of it either")
    return await build_report(cp, job, series=series)


# -- storing the summaries of ended jobs --------------------------------------------------------


def _when(ts: float | None) -> str:
    if not ts:
        return "unknown"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _usage_lines(r: JobReport) -> list[str]:
    """GPU-hours and $, utilization, memory and grades: the report's figures in words (no
    user-written text)."""
    util = "unknown" if r.mean_utilization is None else f"{r.mean_utilization:.0f} %"
    grades = ", ".join(f"{g.metric.replace('_', ' ')} {g.grade}" for g in r.grades
                       if g.grade != "unknown")
    return [f"{r.gpus} GPU(s): {r.gpu_hours:.2f} GPU-hours, {_dollars(r.cost)} at "
            f"{_dollars(r.cost_per_hour)}/hr, {_dollars(r.wasted)} of it on GPU time under "
            f"{r.idle_threshold_percent:g} % utilization.",
            f"GPU utilization {util}; peak GPU memory {_gib(r.peak_memory_used_mib)}"
            + (f"; grades: {grades}" if grades else "") + "."]


def admin_comment_text(r: JobReport) -> str:
    """The summary written to the job's AdminComment (``reports.admin_comment``), as
    Jobstats writes its own: one line of the report's figures, in lower case (sacctmgr
    lowercases what it stores there, quoted or not: written so, it reads back as written)."""
    return ("gpuwarden: " + " ".join(_usage_lines(r))).lower()


def report_text(r: JobReport) -> tuple[str, str]:
    """The end-of-job message: a title and a plain-text body (Jobstats' layout, with $)."""
    title = (f"gpuwarden: job {r.job_id} ({r.name}) of {r.user} {r.state}: "
             f"{r.gpu_hours:.2f} GPU-hours, {_dollars(r.cost)}")
    status = [r.state]
    if r.exit_code is not None:
        status.append(f"exit code {r.exit_code}")
    if r.signal:
        status.append(f"signal {r.signal}")
    lines = [
        f"Job {r.job_id} {r.name!r} of user {r.user}"
        + (f" (account {r.account})" if r.account else "")
        + (f", partition {r.partition}" if r.partition else "") + f": {', '.join(status)}.",
        f"Ran {_when(r.start_time)} to {_when(r.end_time)} ({format_duration(r.elapsed_s)})"
        + (f" on {', '.join(r.nodes)}" if r.nodes else "")
        + (f"; time limit {format_duration(r.time_limit_s)}" if r.time_limit_s else "") + ".",
        *_usage_lines(r),
    ]
    for g in r.per_gpu:
        gu = "unknown" if g.mean_utilization is None else f"{g.mean_utilization:.0f} %"
        lines.append(f"  {g.node}/{g.index} {g.model or ''}: utilization {gu}, memory "
                     f"{_gib(g.peak_memory_used_mib)} of {_gib(g.memory_total_mib)}, "
                     f"{_dollars(g.cost)}")
    if r.notes:
        lines.append("Notes:")
        lines += [f"  * {n.text}" for n in r.notes]
    return title, "\n".join(lines)


_FIGURES = ("user", "account", "partition", "state", "start_time", "end_time", "elapsed_s",
            "gpus", "gpu_hours", "mean_utilization", "cost", "wasted")


class JobReports:
    """``serve``'s background task: every ``reports.interval``, the ended GPU jobs of the
    collected Slurm snapshot that have no stored summary get one (once the scrapes of
    their last seconds are in: two scrape intervals after the end), and with
    ``reports.end_of_job_message`` their owner's message is queued in the same transaction
    (not for a job that ended before these reports first watched the cluster: a first
    start does not message the owners of every job in the accounting window)
    through ``notifier``, the control plane's one outbox: the watchdog's or reclaim's loop
    delivers it, or with ``delivers`` (neither runs) this task's own loop, after each cycle,
    so the messages do not depend on the watchdog.  Summaries older than
    ``reports.retention_days`` are deleted."""

    PRUNE_EVERY = 3600.0

    def __init__(self, cp: ControlPlane, notifier: Notifier | None = None, *,
                 delivers: bool = False) -> None:
        self.cp = cp
        self.notifier = notifier
        self.delivers = delivers and notifier is not None
        self.started = cp.clock()  # watching since (or the oldest summary's time: cycle)
        self.cycles = 0
        self.stored = 0
        self.messages = 0
        self.comments = 0  # AdminComments written (reports.admin_comment)
        self._pruned_at = 0.0
        self._warned = False

    async def cycle(self) -> int:
        """One look; returns how many summaries it stored."""
        from gpuwarden.services import slurm

        cp, config = self.cp, self.cp.config.reports
        now = cp.clock()
        horizon = now - config.retention_days * 86400
        settle = 2 * cp.config.scrape.interval
        stored = 0
        try:
            ended = [j for j in slurm.ended_jobs(cp, since=horizon)
                     if j.start_time and j.end_time and j.end_time + settle <= now
                     and is_gpu_job(j)]
        except GpuwardenError:  # Slurm not configured or not collected yet
            ended = []
        if ended:
            have = await asyncio.to_thread(_store(cp).stored_ids, cp.config.cluster,
                                           min(j.end_time or now for j in ended))
            # since when these reports have watched (across restarts: the oldest summary's
            # time; else this service's start), so a first start summarises the jobs that
            # ended before it without messaging their owners about them
            first = await asyncio.to_thread(_store(cp).first_stored, cp.config.cluster)
            watching = self.started if first is None else min(first, self.started)
            for job in ended:
                if job.job_id in have:
                    continue
                report = await build_report(cp, job)
                before = (job.end_time or now) + settle < watching
                if await asyncio.to_thread(self._save, report, cp.clock(), before):
                    stored += 1
                    if config.admin_comment:
                        await self._admin_comment(report)
        if now - self._pruned_at >= self.PRUNE_EVERY:
            self._pruned_at = now
            await asyncio.to_thread(_store(cp).prune, horizon)
        self.cycles += 1
        self.stored += stored
        return stored

    async def _admin_comment(self, report: JobReport) -> None:
        """Write the stored summary to the job's AdminComment; a failure is logged (the
        summary stays stored, and the comment is not retried)."""
        import httpx

        from gpuwarden.services import slurm

        try:
            async with httpx.AsyncClient() as client:
                await slurm.admin_comment(self.cp, client, "reports", report.job_id,
                                          admin_comment_text(report))
            self.comments += 1
        except GpuwardenError as exc:  # NodeError too: the controller refused or is away
            log.warning("job %s: AdminComment not written: %s", report.job_id, exc)

    def _save(self, report: JobReport, now: float, before: bool = False) -> bool:
        """Store ``report`` and queue its owner's message in the same transaction (not for
        a job that ended ``before`` these reports watched); False when it was stored
        already."""
        cp, config = self.cp, self.cp.config.reports
        data = report.model_dump(mode="json", exclude={"utilization", "source", "stored_at"})
        for g in data["per_gpu"]:
            g["utilization"], g["memory_used_mib"] = [], []
        figures = {k: data[k] for k in _FIGURES}
        notifier = self.notifier
        store = _store(cp)
        with store.write() as conn:
            if not store.put(conn, cp.config.cluster, report.job_id, figures, data, now):
                return False
            if not config.end_of_job_message:
                message = "off"
            elif before:
                message = "not sent: it ended before gpuwarden watched the cluster"
            elif notifier is None:
                message = "no notifier"
            else:
                title, body = report_text(report)
                queued = notifier.queue(conn, title, body, "info", now, users=[report.user],
                                        admins=False)
                message = "queued" if queued else "owner unreachable"
                self.messages += queued
            store.set_message(conn, cp.config.cluster, report.job_id, message)
        if message.startswith("no notifier") and not self._warned:
            self._warned = True
            log.warning("reports.end_of_job_message is on but these job reports were given "
                        "no notifier: no end-of-job messages are sent")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.cp.config.reports.interval
        while not stop.is_set():
            try:
                await self.cycle()
                if self.delivers and self.notifier is not None:
                    await asyncio.to_thread(self.notifier.deliver, self.cp.clock())
            except Exception:
                log.exception("job reports cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


def summaries(cp: ControlPlane, *, since: float, until: float, user: str | None = None,
              job_ids: Sequence[int] = ()) -> list[JobReport]:
    """Stored summaries of jobs that ended in [since, until]."""
    return [JobReport.model_validate({**r, "source": "stored"}) for r in _store(cp).reports(
        cp.config.cluster, since=since, until=until, user=user, job_ids=job_ids)]

