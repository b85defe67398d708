"""``sdiag`` text output (no JSON exists in 22.05) -> :class:`SchedulerStats`."""

from __future__ import annotations

import re

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.model import SchedulerStats

_LINE_RE = re.compile(r"^\s*([A-Za-z][A-Za-z ()/_-]*?):\s+(-?\d+)\b")
_EPOCH_RE = re.compile(r"\((\d+)\)\s*$")

# (section, label) -> field; section is "" before the first section header.
_MAIN = "main"
_BF = "backfill"
_FIELDS: dict[tuple[str, str], str] = {
    ("", "Server thread count"): "server_thread_count",
    ("", "Agent queue size"): "agent_queue_size",
    ("", "Agent count"): "agent_count",
    ("", "Agent thread count"): "agent_thread_count",
    ("", "DBD Agent queue size"): "dbd_agent_queue_size",
    ("", "Jobs submitted"): "jobs_submitted",
    ("", "Jobs started"): "jobs_started",
    ("", "Jobs completed"): "jobs_completed",
    ("", "Jobs canceled"): "jobs_canceled",
    ("", "Jobs failed"): "jobs_failed",
    ("", "Jobs pending"): "jobs_pending",
    ("", "Jobs running"): "jobs_running",
    (_MAIN, "Last cycle"): "last_cycle_us",
    (_MAIN, "Max cycle"): "max_cycle_us",
    (_MAIN, "Total cycles"): "total_cycles",
    (_MAIN, "Mean cycle"): "mean_cycle_us",
    (_MAIN, "Mean depth cycle"): "mean_depth_cycle",
    (_MAIN, "Cycles per minute"): "cycles_per_minute",
    (_MAIN, "Last queue length"): "last_queue_length",
    (_BF, "Total backfilled jobs (since last slurm start)"): "bf_backfilled_jobs",
    (_BF, "Total backfilled jobs (since last stats cycle start)"):
        "bf_backfilled_jobs_since_cycle",
    (_BF, "Total backfilled heterogeneous job components"): "bf_backfilled_het_jobs",
    (_BF, "Total cycles"): "bf_total_cycles",
    (_BF, "Last cycle"): "bf_last_cycle_us",
    (_BF, "Max cycle"): "bf_max_cycle_us",
    (_BF, "Mean cycle"): "bf_mean_cycle_us",
    (_BF, "Last depth cycle"): "bf_last_depth_cycle",
    (_BF, "Last depth cycle (try sched)"): "bf_last_depth_cycle_try",
    (_BF, "Depth Mean"): "bf_depth_mean",
    (_BF, "Depth Mean (try depth)"): "bf_depth_mean_try",
    (_BF, "Last queue length"): "bf_last_queue_length",
    (_BF, "Queue length mean"): "bf_queue_length_mean",
    (_BF, "Last table size"): "bf_last_table_size",
    (_BF, "Mean table size"): "bf_table_size_mean",
}


def parse_sdiag(text: str) -> SchedulerStats:
    """Read the counters of the main and backfill scheduler sections."""
    values: dict[str, int | float] = {}
    section = ""
    found = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Main schedule statistics"):
            section = _MAIN
            continue
        if stripped.startswith("Backfilling stats"):
            section = _BF
            continue
        if stripped.startswith(("Latency for", "Remote Procedure Call", "Pending RPC")):
            section = "rpc"
            continue
        if stripped.startswith("sdiag output at"):
            m = _EPOCH_RE.search(stripped)
            if m:
                values["collected_at"] = float(m.group(1))
            found = True
            continue
        if stripped.startswith("Data since"):
            m = _EPOCH_RE.search(stripped)
            if m:
                values["stats_since"] = float(m.group(1))
            continue
        m = _LINE_RE.match(line)
        if not m or section == "rpc":
            continue
        key = (section, m.group(1).strip())
        name = _FIELDS.get(key)
        if name is not None:
            values[name] = int(m.group(2))
            found = True
    if not found:
        raise ParseError("sdiag output has none of the expected counters")
    return SchedulerStats(**values)  # type: ignore[arg-type]
