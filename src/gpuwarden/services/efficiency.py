"""GPU efficiency over time (``gpuwarden report --since 7d --by user``): the stored
summaries of the GPU jobs that ended in the window, summed per user, account or
partition, each with its rank by GPU-hours, as Princeton's utilization reports rank users
("3rd most GPU-hours, efficiency 12 %").  Efficiency is GPU utilization weighted by
GPU-hours; $ and $ wasted are the jobs' reports' (services.jobreport)."""

from __future__ import annotations

import csv
import io
import re

from gpuwarden.durations import parse_duration
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.models import EfficiencyReport, EfficiencyRow
from gpuwarden.state.jobreports import GroupBy, JobReportStore

_WEEKS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*w\s*$")
CSV_COLUMNS = ("rank", "key", "jobs", "gpu_hours", "mean_utilization", "cost", "wasted")


def parse_since(text: str) -> float:
    """``7d``, ``24h``, ``90m``, ``2w`` -> seconds; the error names ``since``."""
    weeks = _WEEKS.match(text)
    try:
        seconds = float(weeks.group(1)) * 7 * 86400 if weeks else parse_duration(text)
    except ValueError:
        raise ValueError(f"since: {text!r} is not a duration; write e.g. 7d, 24h, 2w") from None
    if seconds <= 0:
        raise ValueError(f"since: {text!r} must be longer than 0")
    return seconds


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def efficiency(cp: ControlPlane, *, since: str = "7d", by: GroupBy = "user",
               now: float | None = None) -> EfficiencyReport:
    until = cp.clock() if now is None else now
    start = until - parse_since(since)
    totals = JobReportStore(cp.db).totals(cp.config.cluster, since=start, until=until, by=by)
    rows = []
    for rank, t in enumerate(totals, start=1):
        util = t["util_hours"] / t["measured_hours"] if t["measured_hours"] else None
        eff = f"efficiency {util:.0f} %" if util is not None else "efficiency unknown"
        rows.append(EfficiencyRow(
            key=t["key"] or "", jobs=t["jobs"], gpu_hours=round(t["gpu_hours"] or 0.0, 4),
            mean_utilization=None if util is None else round(util, 2),
            cost=round(t["cost"] or 0.0, 4), wasted=round(t["wasted"] or 0.0, 4), rank=rank,
            rank_text=f"{ordinal(rank)} most GPU-hours of {len(totals)}, {eff}"))
    measured = sum(t["measured_hours"] or 0.0 for t in totals)
    return EfficiencyReport(
        since=start, until=until, by=by, jobs=sum(t["jobs"] for t in totals),
        gpu_hours=round(sum(t["gpu_hours"] or 0.0 for t in totals), 4),
        mean_utilization=(round(sum(t["util_hours"] or 0.0 for t in totals) / measured, 2)
                          if measured else None),
        cost=round(sum(t["cost"] or 0.0 for t in totals), 4),
        wasted=round(sum(t["wasted"] or 0.0 for t in totals), 4), rows=rows)


def efficiency_csv(report: EfficiencyReport) -> str:
    """The rows as CSV, the ``by`` column named after what it holds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report.by if c == "key" else c for c in CSV_COLUMNS])
    for r in report.rows:
        writer.writerow([r.rank, r.key, r.jobs, f"{r.gpu_hours:.4f}",
                         "" if r.mean_utilization is None else f"{r.mean_utilization:.2f}",
                         f"{r.cost:.4f}", f"{r.wasted:.4f}"])
    return out.getvalue()
