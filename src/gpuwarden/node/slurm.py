"""The node daemon's Slurm side: GPU allocations for the job mapper and the simulated GPUs,
and on the controller's daemon the Slurm metrics, the read API and the validated actions.

Routes (all behind the node token):

* ``GET /api/v1/slurm`` — the whole snapshot: queue counts, nodes, partitions, jobs
  (finished ones too: from sacct with accounting, else from squeue while slurmctld keeps
  them), scheduler stats, collector health, ``accounting`` (what the control plane scrapes);
* ``GET /api/v1/slurm/jobs[?state=&user=&partition=&live=1]`` (``live=1``: squeue now, not
  the last cycle's), ``/jobs/{id}``, ``/nodes``, ``/partitions``;
* ``POST /api/v1/slurm/jobs`` (submit), ``/jobs/{id}/cancel|hold|release|requeue|requeuehold``,
  ``/jobs/{id}/admin_comment`` (``{"comment": ...}``: the job's AdminComment),
  ``/nodes/{name}/drain`` (``{"reason": ...}``), ``/nodes/{name}/resume``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuwarden.checks import nccl
from gpuwarden.node.app import json_object, problem
from gpuwarden.node.jobs import JobRef
from gpuwarden.slurm import (
    SlurmActions,
    SlurmCollector,
    SlurmError,
    SlurmMetricsCollector,
    SubmitOptions,
    ValidationError,
    gpu_allocations,
    validate_job_id,
)
from gpuwarden.slurm.errors import BadRequest, ControllerUnreachable, SlurmTimeout
from gpuwarden.slurm.model import not_found_text
from gpuwarden.slurm.profiles import allocated_profiles
from gpuwarden.slurm.wire import encode_summary, job_json


async def _text_field(request: Request, name: str, what: str) -> str | Response:
    """The text field ``name`` of a JSON body, or the 422 that says how to send it."""
    example = f"{{\"{name}\": \"{what}\"}}"
    body = await json_object(request, example, not_json=422, not_object=422)
    if isinstance(body, Response):
        return body
    value = body.get(name)
    if not isinstance(value, str):
        return problem(422, "Unprocessable Content",
                       f"{name}: missing; send {example}")
    return value


class SlurmBridge:
    def __init__(self, collector: SlurmCollector, actions: SlurmActions, node_name: str,
                 *, controller: bool) -> None:
        self.collector = collector
        self.actions = actions
        self.node_name = node_name
        self.controller = controller
        self._cache: tuple[int, dict[str, Any]] | None = None

    # -- for the GPU poller ----------------------------------------------------------------

    def allocations(self) -> dict[int, list[JobRef]]:
        allocations = gpu_allocations(self.collector.latest(), self.node_name)
        profiles = allocated_profiles(allocations)
        return {
            index: [JobRef(str(ref.job_id), ref.user, ref.partition, source="slurm",
                           profile=profiles[index])]
            for index, ref in allocations.items()
        }

    def profiles(self, base: Mapping[int, str]) -> dict[int, str]:
        """Simulated GPUs follow Slurm: an allocated GPU shows its job's profile, the others
        their base profile."""
        allocated = self.allocations()
        return {i: (allocated[i][0].profile or "train") if i in allocated else p
                for i, p in base.items()}

    # -- controller: metrics and API -------------------------------------------------------

    def metric_collectors(self) -> list[Any]:
        return [SlurmMetricsCollector(self.collector.latest)] if self.controller else []

    def document(self) -> dict[str, Any] | None:
        snap = self.collector.latest()
        if snap is None:
            return None
        if self._cache is None or self._cache[0] != id(snap):
            self._cache = (id(snap), encode_summary(snap))
        return self._cache[1]

    def routes(self) -> list[Route]:
        if not self.controller:
            return []
        return [
            Route("/api/v1/slurm", self._summary),
            Route("/api/v1/slurm/jobs", self._jobs, methods=["GET"]),
            Route("/api/v1/slurm/jobs", self._submit, methods=["POST"]),
            Route("/api/v1/slurm/jobs/{job_id}", self._job),
            Route("/api/v1/slurm/jobs/{job_id}/{action}", self._job_action, methods=["POST"]),
            Route("/api/v1/slurm/nodes", self._nodes),
            Route("/api/v1/slurm/nodes/{name}/{action}", self._node_action, methods=["POST"]),
            Route("/api/v1/slurm/partitions", self._partitions),
            Route("/api/v1/slurm/nccl", self._nccl, methods=["POST"]),
        ]

    def _doc_or_503(self) -> dict[str, Any] | Response:
        doc = self.document()
        if doc is None:
            return problem(503, "Service Unavailable", "The first Slurm cycle has not finished.")
        return doc

    async def _summary(self, request: Request) -> Response:
        doc = self._doc_or_503()
        return doc if isinstance(doc, Response) else JSONResponse(doc)

    async def _jobs(self, request: Request) -> Response:
        q = request.query_params
        if q.get("live") in ("1", "true"):
            # squeue now, not the last cycle's: what a stop, replace or check asks just
            # before it acts (a job that started since the cycle must not be missed)
            try:
                listed = [job_json(j) for j in await run_in_threadpool(self.actions.adapter.jobs)]
            except SlurmError as exc:
                return problem(503, "Service Unavailable", f"squeue failed: {exc}")
        else:
            doc = self._doc_or_503()
            if isinstance(doc, Response):
                return doc
            listed = doc["jobs"]
        jobs = [j for j in listed
                if (not q.get("state") or j["state"] == q["state"].upper())
                and (not q.get("user") or j["user"] == q["user"])
                and (not q.get("partition") or j["partition"] == q["partition"])]
        return JSONResponse(jobs)

    async def _job(self, request: Request) -> Response:
        try:
            job_id = validate_job_id(request.path_params["job_id"])
        except ValidationError as exc:
            return problem(422, "Unprocessable Content", str(exc))
        doc = self._doc_or_503()
        if isinstance(doc, Response):
            return doc
        for job in doc["jobs"]:
            task = f"{job['array_job_id']}_{job['array_task_id']}" if job.get(
                "array_task_id") else None
            if str(job["job_id"]) == job_id or task == job_id:
                return JSONResponse(job)
        return problem(404, "Not Found", not_found_text(job_id, doc.get("accounting") or {}))

    async def _nodes(self, request: Request) -> Response:
        doc = self._doc_or_503()
        return doc if isinstance(doc, Response) else JSONResponse(doc["nodes"])

    async def _partitions(self, request: Request) -> Response:
        doc = self._doc_or_503()
        return doc if isinstance(doc, Response) else JSONResponse(doc["partitions"])

    async def _submit(self, request: Request) -> Response:
        body = await json_object(request, '{"script": "#!/bin/sh\\n..."}', not_object=422)
        if isinstance(body, Response):
            return body
        script = body.pop("script", None)
        known = {f.name for f in dataclasses.fields(SubmitOptions)}
        unknown = sorted(set(body) - known)
        if unknown:
            return problem(422, "Unprocessable Content",
                           f"{unknown[0]}: unknown option; use: script, {', '.join(sorted(known))}")
        if "nodelist" in body and isinstance(body["nodelist"], list):
            body["nodelist"] = tuple(body["nodelist"])
        return await self._run(lambda: {"job_id": self.actions.submit(
            script, SubmitOptions(**body))}, status=201)

    async def _job_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action == "admin_comment":
            comment = await _text_field(request, "comment", "the text to write")
            if isinstance(comment, Response):
                return comment
            job_id = request.path_params["job_id"]
            return await self._run(lambda: self.actions.admin_comment(job_id, comment))
        fn = {"cancel": self.actions.cancel, "hold": self.actions.hold,
              "release": self.actions.release, "requeue": self.actions.requeue,
              "requeuehold": self.actions.requeuehold}.get(action)
        if fn is None:
            return problem(404, "Not Found", f"no job action {action!r}; use cancel, hold, "
                                             "release, requeue, requeuehold or admin_comment")
        job_id = request.path_params["job_id"]
        return await self._run(lambda: fn(job_id), refresh=True)

    async def _node_action(self, request: Request) -> Response:
        action = request.path_params["action"]
        name = request.path_params["name"]
        if action == "drain":
            reason = await _text_field(request, "reason", "why the node is drained")
            if isinstance(reason, Response):
                return reason
            return await self._run(lambda: self.actions.drain(name, reason), refresh=True)
        if action == "resume":
            return await self._run(lambda: self.actions.resume(name), refresh=True)
        return problem(404, "Not Found", f"no node action {action!r}; use drain or resume")

    async def _nccl(self, request: Request) -> Response:
        """The cross-node NCCL check's step: ``{"nodes": [...], "gpus_per_node": N,
        "job_id": holder or null, "mpi": plugin or null, "gres": true}`` runs one rank per
        GPU of every node (``checks.nccl.rank_command``) and answers ``{"exit", "output"}``
        (the control plane parses and judges it; a rank whose node lacks nccl-tests says so
        in it)."""
        body = await json_object(request, '{"nodes": ["node1", "node2"], "gpus_per_node": 8}',
                                 not_object=422)
        if isinstance(body, Response):
            return body
        unknown = sorted(set(body) - {"nodes", "gpus_per_node", "job_id", "mpi", "gres"})
        if unknown:
            return problem(422, "Unprocessable Content", f"{unknown[0]}: unknown field; use "
                           "nodes, gpus_per_node, job_id, mpi, gres")
        nodes, gpus = body.get("nodes"), body.get("gpus_per_node")
        if not isinstance(nodes, list) or len(nodes) < 2:
            return problem(422, "Unprocessable Content",
                           "nodes: give a list of two or more Slurm node names")
        if not isinstance(body.get("gres", True), bool):
            return problem(422, "Unprocessable Content", "gres: true or false")

        def step() -> dict[str, Any]:
            done = self.actions.step(
                nodes, gpus, nccl.rank_command(), job_id=body.get("job_id"),
                mpi=body.get("mpi"), gpus_per_node=gpus if body.get("gres", True) else None)
            return {"exit": done.returncode,
                    "output": (done.stdout + "\n" + done.stderr).strip()[-65536:]}

        return await self._run(step)

    async def _run(self, fn: Any, *, status: int = 200, refresh: bool = False) -> Response:
        try:
            result = await run_in_threadpool(fn)
        except ValidationError as exc:
            return problem(422, "Unprocessable Content", str(exc))
        except BadRequest as exc:
            return problem(400, "Bad Request", str(exc))
        except (ControllerUnreachable, SlurmTimeout) as exc:
            return problem(503, "Service Unavailable", str(exc))
        except SlurmError as exc:
            return problem(502, "Bad Gateway", str(exc))
        if refresh:  # let the next read see the change without waiting a whole cycle
            await run_in_threadpool(lambda: self.collector.collect_once(accounting=False))
        return JSONResponse(result if result is not None else {"ok": True}, status)
