"""Rules as data: the shipped defaults (``default_rules.yaml``) merged with the config
file's overrides, globally and per cluster.  Each rule names a ``kind``: the evaluator in
:mod:`gpuwarden.watchdog.evaluators` that finds its subjects."""

from __future__ import annotations

import difflib
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpuwarden.config import format_validation_error
from gpuwarden.durations import Duration, format_duration, parse_duration
from gpuwarden.errors import GpuwardenError
from gpuwarden.yamlfile import parse_yaml

__all__ = ["Duration", "RuleSpec", "format_duration", "load_rules", "parse_duration"]

KINDS = (
    "gpu_idle", "gpu_allocated_idle", "thermal_throttle", "xid", "ecc_uncorrectable",
    "row_remap_failure", "gpu_lost", "gpu_memory_full", "node_down", "node_version",
    "slurm_node_state",
    "job_pending", "job_completing",
)


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = ""
    kind: Literal[KINDS]  # type: ignore[valid-type]
    enabled: bool = True
    severity: Literal["info", "warning", "critical"] = "warning"
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    summary: str = "{rule} on {subject}"
    threshold: float | None = None
    clear: float | None = None
    costly_only: bool = False
    temperature_margin: float = 0.0
    xid_class: Literal["hardware", "application"] | None = None
    # a firing alert stays firing (past keep_firing_for) until the node's checks pass again
    # after the finding's last occurrence, and resolves then; a firing one also records a
    # failed check, which drains the node under checks.drain
    until_checks_pass: bool = False
    states: list[str] = Field(default_factory=list)
    after: dict[str, Duration] = Field(default_factory=dict)


def _defaults() -> dict[str, dict[str, Any]]:
    text = resources.files("gpuwarden.watchdog").joinpath("default_rules.yaml").read_text()
    return parse_yaml(text, "gpuwarden/watchdog/default_rules.yaml")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _unknown_rule(source: str, rule_id: str, known: list[str]) -> str:
    """A rule id that is neither shipped nor defined (no ``kind``): most often a typo."""
    close = difflib.get_close_matches(rule_id, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"the rules are: {', '.join(known)}"
    return (f"{source}: unknown rule {rule_id}; {hint} (a new rule of your own needs a kind: "
            f"{', '.join(KINDS)})")


def load_rules(overrides: dict[str, Any] | None = None, *, source: str = "watchdog.rules",
               cluster_overrides: dict[str, Any] | None = None) -> list[RuleSpec]:
    """Defaults, then ``overrides`` (new rules or changed fields), then the cluster's."""
    raw = _defaults()
    for layer in (overrides or {}, cluster_overrides or {}):
        if not isinstance(layer, dict):
            raise GpuwardenError(f"{source}: must be a mapping of rule id -> fields")
        for rule_id, fields in layer.items():
            if fields is False:
                fields = {"enabled": False}
            if not isinstance(fields, dict):
                raise GpuwardenError(f"{source}.{rule_id}: must be a mapping of fields")
            if rule_id not in raw and "kind" not in fields:
                raise GpuwardenError(_unknown_rule(source, str(rule_id), list(raw)))
            raw[rule_id] = _merge(raw.get(rule_id, {}), fields)
    rules = []
    for rule_id, fields in raw.items():
        try:
            rule = RuleSpec.model_validate({**fields, "id": rule_id})
        except ValidationError as exc:
            raise GpuwardenError(format_validation_error(f"{source}.{rule_id}", exc)) from None
        if rule.kind in ("gpu_idle", "gpu_allocated_idle", "gpu_memory_full") and (
                rule.threshold is None):
            raise GpuwardenError(f"{source}.{rule_id}: kind {rule.kind} needs a threshold")
        if rule.kind == "xid" and rule.xid_class is None:
            raise GpuwardenError(f"{source}.{rule_id}: kind xid needs xid_class: hardware or "
                                 "application")
        if rule.until_checks_pass and rule.kind != "xid":
            raise GpuwardenError(f"{source}.{rule_id}: until_checks_pass is for rules of kind "
                                 f"xid (not {rule.kind}); remove it from this rule")
        rules.append(rule)
    return rules
