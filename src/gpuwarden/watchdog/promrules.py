"""The watchdog's rules as Prometheus alerting rules, for teams whose alerting runs in
Prometheus/Alertmanager.  Expressions use the node daemons' series (dcgm-exporter names,
``gpuwarden_*``, the Slurm collector's ``slurm_*``) and the ``node`` target label that
gpuwarden's generated scrape configuration sets.

Where Prometheus cannot say exactly what gpuwarden's own evaluator says, the expression is
the closest honest equivalent and the annotation says so (a pending job's reason is only
visible as a per-reason count in Prometheus, not per job).
"""

from __future__ import annotations

from typing import Any

import yaml

from gpuwarden import __version__
from gpuwarden.watchdog.evaluators import THROTTLE_REASONS
from gpuwarden.watchdog.rules import RuleSpec, format_duration

GPU = "node, gpu, UUID"


def _expr(rule: RuleSpec) -> tuple[str, str] | None:
    """(PromQL, description) for one rule, or None when Prometheus cannot express it."""
    t = rule.threshold
    if rule.kind == "gpu_idle":
        return (f"DCGM_FI_DEV_GPU_UTIL < {t:g} unless on(Hostname, gpu) "
                "gpuwarden_gpu_job_info",
                "GPU {{ $labels.gpu }} on {{ $labels.node }} idle ({{ $value }}%) with no job")
    if rule.kind == "gpu_allocated_idle":
        return (f"(DCGM_FI_DEV_GPU_UTIL < {t:g}) * on(Hostname, gpu) group_left(job_id, user) "
                "gpuwarden_gpu_job_info",
                "GPU {{ $labels.gpu }} on {{ $labels.node }} allocated to job "
                "{{ $labels.job_id }} ({{ $labels.user }}) but idle")
    if rule.kind == "thermal_throttle":
        reasons = "|".join(THROTTLE_REASONS)
        return (f'max by ({GPU}) (gpuwarden_clock_event_active{{reason=~"{reasons}"}}) == 1',
                "GPU {{ $labels.gpu }} on {{ $labels.node }} is throttling")
    if rule.kind == "xid":
        window = format_duration(max(rule.keep_firing_for, 60)).replace("h00m", "h")
        return (f'increase(gpuwarden_xid_errors_total{{kind="{rule.xid_class}"}}[{window}]) > 0',
                f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.node }}}}: {rule.xid_class} "
                "XID {{ $labels.xid }}")
    if rule.kind == "ecc_uncorrectable":
        return ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0",
                "GPU {{ $labels.gpu }} on {{ $labels.node }}: uncorrectable ECC errors")
    if rule.kind == "row_remap_failure":
        return ("DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
                "GPU {{ $labels.gpu }} on {{ $labels.node }}: row remapping failed")
    if rule.kind == "gpu_lost":
        return ("gpuwarden_gpu_up == 0",
                "GPU {{ $labels.gpu }} on {{ $labels.node }} has fallen off the bus")
    if rule.kind == "gpu_memory_full":
        return ("100 * DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) "
                f"> {t:g}", "GPU {{ $labels.gpu }} on {{ $labels.node }} memory "
                "{{ $value | humanize }}% full")
    if rule.kind == "node_down":
        return ('up{job=~"gpuwarden-nodes.*"} == 0', "node {{ $labels.node }} does not answer")
    if rule.kind == "node_version":
        return (f'gpuwarden_build_info{{job=~"gpuwarden-nodes.*",version!="{__version__}"}}',
                "node {{ $labels.node }} runs gpuwarden {{ $labels.version }}, the control "
                f"plane {__version__}")
    if rule.kind == "slurm_node_state":
        states = "|".join(s for s in rule.states if s != "not_responding")
        return (f'slurm_node_state{{state=~"{states}"}} == 1',
                "Slurm node {{ $labels.node }} is {{ $labels.state }}: {{ $labels.reason }}")
    if rule.kind == "job_completing":
        return ("slurm_queue_completing > 0", "{{ $value }} job(s) stuck COMPLETING")
    return None


def prometheus_rules(rules: list[RuleSpec]) -> dict[str, Any]:
    out = []
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.kind == "job_pending":
            # per reason code: "some job has pended for REASON for longer than allowed"
            default = rule.after.get("default", 3600)
            for reason, after in sorted(rule.after.items()):
                selector = (f'reason="{reason}"' if reason != "default" else
                            'reason!~"' + "|".join(k for k in rule.after if k != "default") + '"')
                out.append(_rule(f"{rule.id}_{reason}",
                                 f"slurm_jobs_pending{{{selector}}} > 0", after, rule,
                                 "jobs pending for {{ $labels.reason }} "
                                 f"(longer than {format_duration(after or default)})"))
            continue
        found = _expr(rule)
        if found is not None:
            out.append(_rule(rule.id, found[0], rule.for_, rule, found[1]))
    return {"groups": [{"name": "gpuwarden", "rules": out}]}


def _rule(name: str, expr: str, for_seconds: float, rule: RuleSpec,
          description: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"alert": name, "expr": expr}
    if for_seconds > 0:
        entry["for"] = f"{int(for_seconds)}s"
    if rule.keep_firing_for > 0:
        entry["keep_firing_for"] = f"{int(rule.keep_firing_for)}s"
    entry["labels"] = {"severity": rule.severity, "gpuwarden_rule": rule.id}
    entry["annotations"] = {"summary": description}
    return entry


def render(rules: list[RuleSpec]) -> str:
    header = ("# Alerting rules generated by `gpuwarden export prometheus-rules` from the\n"
              "# watchdog's rules. Check them with `promtool check rules FILE`.\n")
    return header + yaml.safe_dump(prometheus_rules(rules), sort_keys=False, width=100)
