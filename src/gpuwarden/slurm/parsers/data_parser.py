"""``squeue``/``sinfo``/``sacct --json`` of Slurm 23.02+ (the ``data_parser`` plugins
v0.0.39, v0.0.40, v0.0.41, v0.0.42) -> the same :mod:`gpuwarden.slurm.model` as 22.05.

What changed from v0.0.38, and is absorbed here so nothing above sees it:

* numbers that may be unset or infinite became ``{"set": bool, "infinite": bool,
  "number": N}`` (v0.0.39 for squeue, v0.0.40 for most of sacct): :func:`number`;
* ``job_state`` / sacct's ``state.current`` / ``exit_code.status`` / a node's ``state``
  became lists of flags (v0.0.40; a plain string in v0.0.39): :func:`first_flag`;
* sacct's ``exit_code.return_code`` and ``signal.id`` became numbers-with-flags and
  ``signal.signal_id`` became ``signal.id`` (v0.0.40);
* the plugin is named by ``meta.plugin.data_parser`` (``v0.0.40``) rather than by
  ``meta.plugin.type`` (``openapi/dbv0.0.38``).

Built against the documented schemas (slurmrestd's OpenAPI for each version) and tested on
recorded-shape samples under tests/slurm/data; this machine runs 22.05, whose own JSON is
:mod:`gpuwarden.slurm.parsers.v0_0_38`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.gres import parse_gres
from gpuwarden.slurm.hostlist import expand_hostlist
from gpuwarden.slurm.model import (
    FINISHED_STATES,
    NodeInfo,
    SlurmJob,
    SlurmNode,
    SlurmPartition,
)
from gpuwarden.slurm.parsers.sacct import gpus_in_alloc_tres
from gpuwarden.slurm.parsers.v0_0_38 import expand_task_ids, gpu_detail_from_json

_VERSION_RE = re.compile(r"v0\.0\.(\d+)$")
FIRST_VERSION = 39


def load_document(text: str) -> tuple[dict[str, Any], int]:
    """Parse the JSON; return it and its data_parser minor version (39, 40, ...)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise ParseError("the document is not a JSON object")
    plugin = (doc.get("meta") or {}).get("plugin") or {}
    name = str(plugin.get("data_parser") or plugin.get("type") or "")
    m = _VERSION_RE.search(name)
    if m is None or int(m.group(1)) < FIRST_VERSION:
        raise ParseError(f"expected data_parser v0.0.{FIRST_VERSION}+ output, got {name!r}")
    errors = doc.get("errors") or []
    if errors:
        raise ParseError(f"Slurm reported errors: {errors}")
    return doc, int(m.group(1))


def number(value: Any) -> int | None:
    """A plain number, or ``{"set", "infinite", "number"}``: None when unset or infinite."""
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def first_flag(value: Any) -> str:
    """``"RUNNING"`` or ``["RUNNING", "COMPLETING"]`` -> ``RUNNING`` (upper case)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").upper()


def _time(value: Any) -> float | None:
    n = number(value)
    return float(n) if n else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class DataParserShape:
    """Adapter for squeue/sinfo ``--json`` of Slurm 23.02 and newer."""

    name = "data_parser"
    squeue_args = ("--json",)
    sinfo_args = ("--json",)
    has_gpu_detail = True

    def parse_jobs(self, text: str) -> list[SlurmJob]:
        doc, _ = load_document(text)
        jobs: list[SlurmJob] = []
        for raw in doc.get("jobs") or []:
            job = job_from_json(raw)
            tasks = _text(raw.get("array_task_string"))
            if job.array_job_id and job.array_task_id is None and tasks:
                jobs.extend(replace(job, array_task_id=str(t)) for t in expand_task_ids(tasks))
            else:
                jobs.append(job)
        return jobs

    def parse_nodes(self, text: str) -> NodeInfo:
        doc, _ = load_document(text)
        nodes = tuple(node_from_json(n) for n in doc.get("nodes") or [])
        members: dict[str, list[str]] = {}
        for node in nodes:
            for part in node.partitions:
                members.setdefault(part, []).append(node.name)
        parts = tuple(SlurmPartition(name=p, nodes=tuple(ns)) for p, ns in members.items())
        return NodeInfo(nodes=nodes, partitions=parts)


def _exit(raw: Any) -> tuple[int | None, int | None]:
    """``exit_code`` as sacct (and squeue v0.0.40+) write it: status, return code, signal."""
    if isinstance(raw, int):  # squeue v0.0.39: the raw wait status, as v0.0.38
        return (raw >> 8) & 0xFF, raw & 0x7F
    if not isinstance(raw, Mapping):
        return None, None
    code = number(raw.get("return_code"))
    sig_obj = raw.get("signal") or {}
    sig = number(sig_obj.get("id", sig_obj.get("signal_id"))) if isinstance(
        sig_obj, Mapping) else None
    known = bool(first_flag(raw.get("status")))
    return (code if code is not None else (0 if known else None),
            sig if sig is not None else (0 if known else None))


def job_from_json(raw: Mapping[str, Any]) -> SlurmJob:
    """One squeue job of v0.0.39+."""
    nodes = expand_hostlist(_text(raw.get("nodes")))
    state = first_flag(raw.get("job_state"))
    finished = state in FINISHED_STATES
    array_job = number(raw.get("array_job_id")) or 0
    task = number(raw.get("array_task_id"))
    limit = number(raw.get("time_limit"))
    exit_code, signal = _exit(raw.get("exit_code")) if finished else (None, None)
    return SlurmJob(
        job_id=number(raw.get("job_id")) or 0,
        name=_text(raw.get("name")),
        user=_text(raw.get("user_name") or raw.get("user_id")),
        partition=_text(raw.get("partition")),
        state=state,
        reason=_text(raw.get("state_reason")) or "None",
        nodes=nodes,
        num_nodes=number(raw.get("node_count")) or 0,
        num_cpus=number(raw.get("cpus")) or 0,
        comment=_text(raw.get("comment")),
        array_job_id=array_job or None,
        array_task_id=str(task) if array_job and task is not None else None,
        tres_per_node=_text(raw.get("tres_per_node")),
        tres_per_job=_text(raw.get("tres_per_job")),
        tres_per_task=_text(raw.get("tres_per_task")),
        submit_time=_time(raw.get("submit_time")),
        start_time=_time(raw.get("start_time")) if state != "PENDING" else None,
        time_limit_s=limit * 60 if limit is not None else None,
        priority=number(raw.get("priority")),
        gpu_detail=gpu_detail_from_json(nodes, list(raw.get("gres_detail") or [])),
        end_time=_time(raw.get("end_time")) if finished else None,
        exit_code=exit_code,
        signal=signal,
        account=_text(raw.get("account")),
        qos=_text(raw.get("qos")),
        alloc_gpus=gpus_in_alloc_tres(_text(raw.get("tres_alloc_str"))) if finished else None,
    )


def node_from_json(raw: Mapping[str, Any]) -> SlurmNode:
    """One sinfo node of v0.0.39+ (``state`` is a list: base state, then flags)."""
    flags_raw = raw.get("state")
    flags_list = [str(f).upper() for f in flags_raw] if isinstance(flags_raw, list) \
        else [str(flags_raw or "unknown").upper()]
    state = flags_list[0].lower() if flags_list else "unknown"
    flags = tuple(flags_list[1:]) + tuple(str(f).upper() for f in raw.get("state_flags") or [])
    cpus = number(raw.get("cpus")) or 0
    alloc = number(raw.get("alloc_cpus")) or 0
    idle = number(raw.get("alloc_idle_cpus", raw.get("idle_cpus"))) or 0
    if "DRAIN" in flags and state == "idle":
        state = "drained"
    elif "DRAIN" in flags and state in ("mixed", "allocated", "completing"):
        state = "draining"
    if state in ("down", "drained", "fail") or "NOT_RESPONDING" in flags:
        idle = 0
    reason = _text(raw.get("reason"))
    return SlurmNode(
        name=_text(raw.get("name")),
        state=state,
        state_raw="+".join(flags_list),
        flags=flags,
        reason=reason,
        reason_time=_time(raw.get("reason_changed_at")) if reason else None,
        reason_user=_text(raw.get("reason_set_by_user")) if reason else "",
        partitions=tuple(raw.get("partitions") or ()),
        cpus_alloc=alloc,
        cpus_idle=idle,
        cpus_other=max(cpus - alloc - idle, 0),
        cpus_total=cpus,
        memory_mb=number(raw.get("real_memory")) or 0,
        alloc_memory_mb=number(raw.get("alloc_memory")) or 0,
        gres=parse_gres(_text(raw.get("gres"))),
        gres_used=parse_gres(_text(raw.get("gres_used"))),
    )


def parse_sacct_jobs(text: str) -> list[SlurmJob]:
    """``sacct --json`` of v0.0.39+: finished allocations (steps are ignored)."""
    doc, _ = load_document(text)
    jobs = []
    for raw in doc.get("jobs") or []:
        job = sacct_job_from_json(raw)
        if job is not None:
            jobs.append(job)
    return jobs


def sacct_job_from_json(raw: Mapping[str, Any]) -> SlurmJob | None:
    state_obj = raw.get("state") or {}
    state = first_flag(state_obj.get("current"))
    if state not in FINISHED_STATES:
        return None
    times = raw.get("time") or {}
    array = raw.get("array") or {}
    array_job = number(array.get("job_id")) or 0
    task = number(array.get("task_id"))
    limit = number(times.get("limit"))
    tres = (raw.get("tres") or {}).get("allocated") or []
    exit_code, signal = _exit(raw.get("exit_code"))
    nodes_text = _text(raw.get("nodes"))
    return SlurmJob(
        job_id=number(raw.get("job_id")) or 0,
        name=_text(raw.get("name")),
        user=_text(raw.get("user")),
        partition=_text(raw.get("partition")),
        state=state,
        reason=_text(state_obj.get("reason")) or "None",
        nodes=() if nodes_text in ("", "None assigned") else expand_hostlist(nodes_text),
        num_nodes=number(raw.get("allocation_nodes")) or 0,
        num_cpus=sum(number(t.get("count")) or 0 for t in tres if t.get("type") == "cpu"),
        array_job_id=array_job or None,
        array_task_id=str(task) if array_job and task is not None else None,
        submit_time=_time(times.get("submission")),
        start_time=_time(times.get("start")),
        time_limit_s=limit * 60 if limit is not None else None,
        end_time=_time(times.get("end")),
        exit_code=exit_code,
        signal=signal,
        elapsed_s=number(times.get("elapsed")),
        account=_text(raw.get("account")),
        alloc_gpus=(sum(number(t.get("count")) or 0 for t in tres
                        if t.get("type") == "gres" and t.get("name") == "gpu")
                    if tres else None),
        source="sacct",
    )
