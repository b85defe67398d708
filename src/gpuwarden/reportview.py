"""The terminal's view of a job report (``gpuwarden jobstats``, laid out as Princeton's
``jobstats`` prints one) and of the efficiency report (``gpuwarden report``): Rich
renderables built from the API's JSON, nothing computed here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

WIDTH = 80
GRADE_STYLE = {"good": "green", "fair": "yellow", "poor": "bold red", "unknown": "dim"}


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%a %b %d, %Y at %I:%M %p") if ts else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = ([f"{days} day{'s' * (days != 1)}"] if days else []) + [
        f"{hours:02d}:{minutes:02d}:{s:02d}"]
    return " ".join(parts)


def _gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def meter(value: float | None, red_below: float) -> Text:
    """Jobstats' 50-column meter: ``[|||||||     42%]``, red under ``red_below``."""
    if value is None:
        return Text("[" + "unknown".center(50) + "]", style="dim")
    bars = max(0, min(50, int(value) // 2))
    label = f"{value:.0f}%"
    bars = min(bars, 50 - len(label))
    style = "red" if value < red_below else ""
    line = Text("[", style="bold")
    line.append("|" * bars, style=style)
    line.append(" " * (50 - bars - len(label)))
    line.append(label, style="bold " + style if style else "")
    line.append("]", style="bold")
    return line


def _rule(title: str) -> RenderableType:
    return Group(Text(""), Text(title.center(WIDTH), style="bold"), Text("=" * WIDTH))


def job_report(r: dict[str, Any]) -> RenderableType:
    grades = {g["metric"]: g for g in r.get("grades", [])}
    head = Table.grid(padding=(0, 1))
    head.add_column(justify="right", style="bold")
    head.add_column()
    status = r["state"] + (f" (exit code {r['exit_code']}" + (
        f", signal {r['signal']}" if r.get("signal") else "") + ")"
        if r.get("exit_code") is not None else "")
    limit = _duration(r.get("time_limit_s")) if r.get("time_limit_s") else "UNLIMITED"
    eff = grades.get("time_efficiency", {})
    if eff.get("value") is not None:
        limit += f" (used {eff['value']:.0f}%)"
    rows = [
        ("Job ID", str(r["job_id"])),
        ("User/Account", f"{r['user']}/{r['account'] or '-'}"),
        ("Job Name", r.get("name") or "-"),
        ("State", status),
        ("Nodes", f"{len(r['nodes'])}" + (f" ({', '.join(r['nodes'])})" if r["nodes"] else "")),
        ("GPUs", str(r["gpus"])),
        ("Partition", r.get("partition") or "-"),
        ("Start Time", _when(r.get("start_time"))),
        ("End Time", _when(r.get("end_time")) if r.get("end_time") else "running"),
        ("Run Time", _duration(r.get("elapsed_s"))),
        ("Time Limit", Text(limit, style=GRADE_STYLE.get(eff.get("grade", ""), ""))),
        ("Report", f"{r['source']}; Slurm facts from {r['slurm_source']}"),
    ]
    for key, value in rows:
        head.add_row(f"{key}:", value)
    util = grades.get("gpu_utilization", {})
    total = sum(g.get("memory_total_mib") or 0 for g in r["per_gpu"])
    peak = sum(g.get("peak_memory_used_mib") or 0 for g in r["per_gpu"])
    overall = Table.grid(padding=(0, 1))
    overall.add_column()
    overall.add_column()
    overall.add_row("  GPU utilization ", meter(r.get("mean_utilization"),
                                                util.get("poor_below", 15)))
    overall.add_row("  GPU memory usage", meter(100 * peak / total if total else None, 0))
    money = Text(f"  GPU-hours {r['gpu_hours']:.2f}   cost ${r['cost']:,.2f} at "
                 f"${r['cost_per_hour']:,.2f}/hr   wasted ", style="")
    money.append(f"${r['wasted']:,.2f}", style="red" if r["wasted"] > 0.005 else "")
    money.append(f" (GPU time under {r['idle_threshold_percent']:g}%)")
    gpus = Table("Node", "GPU", "Model", "Utilization", "Memory (peak/total)", "Idle", "$",
                 "$ wasted", box=None, pad_edge=True)
    for g in r["per_gpu"]:
        style = "red" if g.get("never_used") else ""
        gpus.add_row(g["node"], str(g["index"]), g.get("model") or "-",
                     Text(_pct(g.get("mean_utilization")), style=style),
                     f"{_gib(g.get('peak_memory_used_mib'))} / {_gib(g.get('memory_total_mib'))}",
                     _pct(g.get("idle_percent")), f"{g['cost']:,.2f}", f"{g['wasted']:,.2f}")
    graded = Text("  Grades: ")
    for i, g in enumerate(r.get("grades", [])):
        if i:
            graded.append(", ")
        graded.append(f"{g['metric'].replace('_', ' ')} ")
        graded.append(g["grade"] + (f" ({g['value']:.0f}%)" if g.get("value") is not None
                                    else ""), style=GRADE_STYLE[g["grade"]])
    parts: list[RenderableType] = [
        Text("=" * WIDTH), Text("Slurm Job Statistics".center(WIDTH), style="bold"),
        Text("=" * WIDTH), head, _rule("Overall Utilization"), overall, money, graded,
        _rule("Detailed Utilization"),
        gpus if r["per_gpu"] else Text("  no GPU samples of this job in the metrics store",
                                       style="dim")]
    if r.get("notes"):
        parts.append(_rule("Notes"))
        for n in r["notes"]:
            parts.append(Text(f"  * {n['text']}",
                              style="bold red" if n["severity"] == "warning" else ""))
    parts.append(Text(""))
    return Group(*parts)


def efficiency_report(e: dict[str, Any]) -> RenderableType:
    by = e["by"]
    table = Table("rank", by, "jobs", "GPU-hours", "mean util", "$", "$ wasted", "",
                  title=f"GPU jobs that ended {_when(e['since'])} - {_when(e['until'])}")
    for row in e["rows"]:
        util = row.get("mean_utilization")
        table.add_row(str(row["rank"]), row["key"] or "-", str(row["jobs"]),
                      f"{row['gpu_hours']:,.2f}",
                      Text(_pct(util), style="red" if util is not None and util < 15 else ""),
                      f"{row['cost']:,.2f}", f"{row['wasted']:,.2f}", row["rank_text"])
    total = Text(f"{e['jobs']} job(s), {e['gpu_hours']:,.2f} GPU-hours, mean utilization "
                 f"{_pct(e.get('mean_utilization'))}, ${e['cost']:,.2f} spent, "
                 f"${e['wasted']:,.2f} of it on idle GPU time")
    return Group(table, total)
