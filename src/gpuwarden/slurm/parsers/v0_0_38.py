"""``squeue --json`` / ``sinfo --json`` of Slurm 22.05 (openapi plugin v0.0.38).

Complete (it carries ``gres_detail``, so no scontrol call is needed) but slow on big queues:
~3 s and 470 MB for 10,000 jobs where the ``-O`` format takes ~0.15 s. Kept as an adapter
for small clusters, for tools that want the JSON, and as the model for newer shapes.
``sacct --json`` (plugin ``openapi/dbv0.0.38``) is read by :func:`parse_sacct_jobs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.gres import parse_gres, parse_index_list
from gpuwarden.slurm.hostlist import expand_hostlist
from gpuwarden.slurm.model import (
    FINISHED_STATES,
    NodeInfo,
    SlurmJob,
    SlurmNode,
    SlurmPartition,
)
from gpuwarden.slurm.parsers.sacct import gpus_in_alloc_tres

PLUGIN = "openapi/v0.0.38"
DB_PLUGIN = "openapi/dbv0.0.38"


def load_document(text: str, plugin_type: str = PLUGIN) -> dict[str, Any]:
    """Parse the JSON and check it is the v0.0.38 shape."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise ParseError("the document is not a JSON object")
    plugin = doc.get("meta", {}).get("plugin", {}).get("type")
    if plugin != plugin_type:
        raise ParseError(f"expected {plugin_type} output, got {plugin!r}")
    errors = doc.get("errors") or []
    if errors:
        raise ParseError(f"Slurm reported errors: {errors}")
    return doc


class V0038Shape:
    """Adapter for the openapi v0.0.38 JSON of Slurm 22.05."""

    name = "v0.0.38"
    squeue_args = ("--json",)
    sinfo_args = ("--json",)
    has_gpu_detail = True

    def parse_jobs(self, text: str) -> list[SlurmJob]:
        jobs: list[SlurmJob] = []
        for raw in load_document(text).get("jobs", []):
            job = job_from_json(raw)
            tasks = raw.get("array_task_string") or ""
            if job.array_job_id and job.array_task_id is None and tasks:
                # A pending array's meta record stands for all its tasks (as squeue -r).
                jobs.extend(replace(job, array_task_id=str(t)) for t in expand_task_ids(tasks))
            else:
                jobs.append(job)
        return jobs

    def parse_nodes(self, text: str) -> NodeInfo:
        raw_nodes = load_document(text).get("nodes", [])
        nodes = tuple(node_from_json(n) for n in raw_nodes)
        members: dict[str, list[str]] = {}
        for node in nodes:
            for part in node.partitions:
                members.setdefault(part, []).append(node.name)
        # v0.0.38 sinfo has no partition records: availability and default are unknown.
        parts = tuple(SlurmPartition(name=p, nodes=tuple(ns)) for p, ns in members.items())
        return NodeInfo(nodes=nodes, partitions=parts)


def expand_task_ids(text: str) -> list[int]:
    """``0-9%2`` / ``1,3,5-7`` -> task ids (the ``%`` throttle is ignored)."""
    text = text.split("%", 1)[0]
    try:
        return list(parse_index_list(text))
    except ParseError:
        return []


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) else default


def decode_wait_status(status: Any) -> tuple[int | None, int | None]:
    """squeue v0.0.38's ``exit_code`` is the raw wait status: 768 -> (3, 0), 9 -> (0, 9)."""
    if not isinstance(status, int):
        return None, None
    return (status >> 8) & 0xFF, status & 0x7F


def job_from_json(raw: Mapping[str, Any]) -> SlurmJob:
    nodes = expand_hostlist(raw.get("nodes") or "")
    state = str(raw.get("job_state") or "").upper()
    finished = state in FINISHED_STATES
    exit_code, signal = decode_wait_status(raw.get("exit_code")) if finished else (None, None)
    detail = gpu_detail_from_json(nodes, raw.get("gres_detail") or [])
    array_job = _int(raw.get("array_job_id"))
    task = raw.get("array_task_id")
    limit = raw.get("time_limit")
    return SlurmJob(
        job_id=_int(raw.get("job_id")),
        name=str(raw.get("name") or ""),
        user=str(raw.get("user_name") or raw.get("user_id") or ""),
        partition=str(raw.get("partition") or ""),
        state=state,
        reason=str(raw.get("state_reason") or "None"),
        nodes=nodes,
        num_nodes=_int(raw.get("node_count")),
        num_cpus=_int(raw.get("cpus")),
        comment=str(raw.get("comment") or ""),
        array_job_id=array_job if array_job else None,
        array_task_id=None if task is None or not array_job else str(task),
        tres_per_node=str(raw.get("tres_per_node") or ""),
        tres_per_job=str(raw.get("tres_per_job") or ""),
        tres_per_task=str(raw.get("tres_per_task") or ""),
        submit_time=_time(raw.get("submit_time")),
        start_time=_time(raw.get("start_time")) if raw.get("job_state") != "PENDING" else None,
        time_limit_s=limit * 60 if isinstance(limit, int) else None,
        priority=_int(raw.get("priority")) if raw.get("priority") is not None else None,
        gpu_detail=detail,
        end_time=_time(raw.get("end_time")) if finished else None,
        exit_code=exit_code,
        signal=signal,
        account=str(raw.get("account") or ""),
        qos=str(raw.get("qos") or ""),
        alloc_gpus=gpus_in_alloc_tres(str(raw.get("tres_alloc_str") or "")) if finished
        else None,
    )


def parse_sacct_jobs(text: str) -> list[SlurmJob]:
    """``sacct --json`` of 22.05: finished allocations (steps are ignored)."""
    jobs = []
    for raw in load_document(text, DB_PLUGIN).get("jobs", []):
        job = sacct_job_from_json(raw)
        if job is not None:
            jobs.append(job)
    return jobs


def sacct_job_from_json(raw: Mapping[str, Any]) -> SlurmJob | None:
    state_obj = raw.get("state") or {}
    state = str(state_obj.get("current") or "").upper()
    if state not in FINISHED_STATES:
        return None
    times = raw.get("time") or {}
    exit_obj = raw.get("exit_code") or {}
    signal_obj = exit_obj.get("signal") or {}
    status = str(exit_obj.get("status") or "")
    code = exit_obj.get("return_code")
    sig = signal_obj.get("signal_id")
    array = raw.get("array") or {}
    array_job = _int(array.get("job_id"))
    task = array.get("task_id")
    limit = times.get("limit")
    tres = (raw.get("tres") or {}).get("allocated") or []
    return SlurmJob(
        job_id=_int(raw.get("job_id")),
        name=str(raw.get("name") or ""),
        user=str(raw.get("user") or ""),
        partition=str(raw.get("partition") or ""),
        state=state,
        reason=str(state_obj.get("reason") or "None"),
        nodes=() if raw.get("nodes") in (None, "", "None assigned") else
        expand_hostlist(str(raw.get("nodes"))),
        num_nodes=_int(raw.get("allocation_nodes")),
        num_cpus=sum(_int(t.get("count")) for t in tres if t.get("type") == "cpu"),
        array_job_id=array_job or None,
        array_task_id=str(task) if array_job and task is not None else None,
        submit_time=_time(times.get("submission")),
        start_time=_time(times.get("start")),
        time_limit_s=limit * 60 if isinstance(limit, int) else None,
        end_time=_time(times.get("end")),
        exit_code=_int(code) if isinstance(code, int) else (0 if status else None),
        signal=_int(sig) if isinstance(sig, int) else (0 if status else None),
        elapsed_s=_int(times.get("elapsed")) if "elapsed" in times else None,
        account=str(raw.get("account") or ""),
        alloc_gpus=(sum(_int(t.get("count")) for t in tres
                        if t.get("type") == "gres" and t.get("name") == "gpu")
                    if tres else None),
        source="sacct",
    )


def gpu_detail_from_json(nodes: tuple[str, ...], details: list[str]
                         ) -> Mapping[str, tuple[int, ...]]:
    """``gres_detail`` lists one GRES string per allocated node, in node order."""
    out: dict[str, tuple[int, ...]] = {}
    for node, text in zip(nodes, details, strict=False):
        indices: list[int] = []
        for item in parse_gres(text):
            if item.is_gpu and item.indices:
                indices.extend(item.indices)
        if indices:
            out[node] = tuple(sorted(indices))
    return MappingProxyType(out)


def node_from_json(raw: Mapping[str, Any]) -> SlurmNode:
    state = str(raw.get("state") or "unknown").lower()
    flags = tuple(str(f).upper() for f in raw.get("state_flags") or [])
    cpus = _int(raw.get("cpus"))
    alloc = _int(raw.get("alloc_cpus"))
    idle = _int(raw.get("idle_cpus"))
    if "DRAIN" in flags and state == "idle":
        state = "drained"
    elif "DRAIN" in flags and state in ("mixed", "allocated", "completing"):
        state = "draining"
    if state in ("down", "drained", "fail") or "NOT_RESPONDING" in flags:
        idle = 0  # as sinfo's CPUsState: CPUs of an unusable node count as "other"
    reason = str(raw.get("reason") or "")
    return SlurmNode(
        name=str(raw.get("name")),
        state=state,
        state_raw=str(raw.get("state") or ""),
        flags=flags,
        reason=reason,
        reason_time=_time(raw.get("reason_changed_at")) if reason else None,
        reason_user=str(raw.get("reason_set_by_user") or "") if reason else "",
        partitions=tuple(raw.get("partitions") or ()),
        cpus_alloc=alloc,
        cpus_idle=idle,
        cpus_other=max(cpus - alloc - idle, 0),
        cpus_total=cpus,
        memory_mb=_int(raw.get("real_memory")),
        alloc_memory_mb=_int(raw.get("alloc_memory")),
        gres=parse_gres(str(raw.get("gres") or "")),
        gres_used=parse_gres(str(raw.get("gres_used") or "")),
    )
