"""A fake RunPod REST v2 server on loopback, built from the real spec: every request and
every response is validated against ``openapi-v2.json`` (a request the spec rejects gets a
400 problem document; a response that breaks the spec is recorded and answered 500).

It moves pods PROVISIONING -> STARTING -> RUNNING on its own clock, and can inject
no-capacity errors, 429 rate limits and 5xx (optionally after the create took effect).
``podAction`` follows the spec: ``stop`` moves a pod to EXITED (compute released, ``cost``
0.0, disk kept), ``start`` boots an EXITED or ERROR pod back through PROVISIONING, an
action the pod's ``actions`` do not list is a 409, as is one on a cluster member or a
locked pod.  Its ``/_proxy/{pod}-{port}`` answers like a booting pod
(:mod:`gpuwarden.providers.podagent`): a pod whose env has ``GPUWARDEN_ENROLL_SHA256``
waits for ``POST /bootstrap/secrets`` with the matching key before it turns healthy, and
``bootstrap_failure`` makes every pod's bootstrap stop at a step; the rest of a running
pod's daemon API is forwarded to the real node daemon ``daemons`` names for it (502 when
none).  Billing accrues
compute only while a pod is not stopped, and its disk (at ``disk_per_gb_hour``, 0 unless a
test sets it) for as long as it exists, stopped or not.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gpuwarden import __version__
from gpuwarden.providers import podagent

NO_CAPACITY = ("There are no longer any instances available with the requested "
               "specifications. Please refresh and try again.")
GPU_TYPES = [
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 8),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 8),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 8),
    ("NVIDIA L4", "L4", 24, 0.43, 8),
]


class Spec:
    """Validators for the operations' request bodies, parameters and responses."""

    def __init__(self, path: Path) -> None:
        self.doc = json.loads(path.read_text())
        self._cache: dict[str, Any] = {}
        self.ops: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for route, item in self.doc["paths"].items():
            for method, op in item.items():
                if isinstance(op, dict) and "operationId" in op:
                    op = {**op, "parameters": item.get("parameters", []) + op.get(
                        "parameters", [])}
                    self.ops[op["operationId"]] = (method.upper(), route, op)

    def validator(self, ref_or_schema: dict[str, Any]) -> Any:
        key = json.dumps(ref_or_schema, sort_keys=True)
        if key not in self._cache:
            root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": self.doc["components"], **ref_or_schema}
            self._cache[key] = jsonschema_rs.Draft202012Validator(root)
        return self._cache[key]

    def resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in obj:
            node: Any = self.doc
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def request_errors(self, op_id: str, body: Any, query: dict[str, str]) -> list[str]:
        _, _, op = self.ops[op_id]
        errors = []
        params = {p["name"]: p for p in (self.resolve(p) for p in op["parameters"])
                  if p["in"] == "query"}
        for name, raw in query.items():
            if name not in params:
                errors.append(f"query parameter {name!r} is not defined")
                continue
            schema = self.resolve(params[name]["schema"]) if "$ref" not in params[name][
                "schema"] else params[name]["schema"]
            value = _coerce(raw, self.resolve(schema) if "$ref" in schema else schema)
            errors += [f"{name}: {e.message}"
                       for e in self.validator(params[name]["schema"]).iter_errors(value)]
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            if body is None:
                errors.append("a JSON body is required")
            else:
                errors += [f"{'/'.join(map(str, e.instance_path)) or 'body'}: {e.message}"
                           for e in self.validator(schema).iter_errors(body)]
        return errors

    def response_errors(self, op_id: str, status: int, body: Any) -> list[str]:
        _, _, op = self.ops[op_id]
        spec = op["responses"].get(str(status)) or op["responses"].get("default")
        if spec is None:
            return [f"status {status} is not documented for {op_id}"]
        spec = self.resolve(spec)
        content = spec.get("content")
        if not content:
            return [] if body is None else [f"{op_id} {status} must have no body"]
        schema = next(iter(content.values()))["schema"]
        return [e.message for e in self.validator(schema).iter_errors(body)]


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if kind == "integer":
        return int(raw) if raw.lstrip("-").isdigit() else raw
    if kind == "array":
        return raw.split(",")
    return raw


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Injection:
    status: int
    times: int
    commit: bool = False  # do the work, then fail (a create that did happen)
    retry_after: int = 1


@dataclass
class FakeRunPod:
    spec_path: Path
    api_key: str = "test-key"
    provisioning_s: float = 0.3
    starting_s: float = 0.3
    bootstrap_s: float = 0.2
    terminate_linger_s: float = 0.2
    disk_per_gb_hour: float = 0.0
    quota: int = 10_000
    window_s: int = 60
    clock: Callable[[], float] = time.monotonic
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)  # gpu id -> pods left (default inf)
    injections: dict[str, list[Injection]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    invalid_requests: list[str] = field(default_factory=list)
    invalid_responses: list[str] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)  # (pod id, action) received
    rate_limited: int = 0
    url: str = ""
    node_version: str = __version__  # what the pods' node daemons report on /healthz
    bootstrap_failure: tuple[str, str] | None = None  # (step, log) every bootstrap stops at
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod id -> secrets
    # pod name -> (URL, token file) of a real node daemon its proxy forwards the rest to
    daemons: dict[str, tuple[str, Path]] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)  # pod id -> boots served

    def __post_init__(self) -> None:
        self.spec = Spec(self.spec_path)
        self.lock = threading.RLock()
        self._window_start = self.clock()
        self._window_used = 0
        self._meta: dict[str, dict[str, float]] = {}
        self._server: uvicorn.Server | None = None

    # ---- test controls --------------------------------------------------------------
    def inject(self, op_id: str, status: int, times: int = 1, commit: bool = False,
               retry_after: int = 1) -> None:
        self.injections.setdefault(op_id, []).append(Injection(status, times, commit,
                                                               retry_after))

    def live_pods(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._view(p) for p in self.pods.values()
                    if self._view(p)["status"] != "TERMINATED"]

    def node_url(self) -> str:
        return self.url + "/_proxy/{pod_id}-{port}"

    def set_gpus(self, pod_id: str, count: int) -> None:
        """Make a running pod report ``count`` GPUs (the zero-GPU restart trap)."""
        self._meta[pod_id]["gpus_seen"] = count

    # ---- state ------------------------------------------------------------------------
    def _view(self, pod: dict[str, Any]) -> dict[str, Any]:
        meta = self._meta[pod["id"]]
        now = self.clock()
        if meta.get("terminated_at") is not None:
            status = "TERMINATED"
        elif "stopped" in meta:
            status = "EXITED"
        elif now - meta["started"] < self.provisioning_s:
            status = "PROVISIONING"
        elif now - meta["started"] < self.provisioning_s + self.starting_s:
            status = "STARTING"
        else:
            status = "RUNNING"
        view = dict(pod, status=status)
        view["actions"] = {"RUNNING": ["stop", "restart", "terminate"],
                           "EXITED": ["start", "terminate"], "TERMINATED": [],
                           }.get(status, ["stop", "terminate"])
        view["cost"] = pod["cost"] if status in ("RUNNING", "PROVISIONING", "STARTING") else 0.0
        if status == "RUNNING":
            gpus = int(meta.get("gpus_seen", pod["gpu"]["count"]))
            view["runtime"] = {"uptime": int(now - meta["started"]),
                               "gpus": [{"util": 0, "memoryUtil": 0}] * gpus,
                               "ports": [{"private": 9400, "public": 443, "type": "http",
                                          "ip": "100.64.0.1"}]}
            view["startedAt"] = pod["createdAt"]
        return view

    def _new_pod(self, body: dict[str, Any], cluster: tuple[str, int] | None = None
                 ) -> dict[str, Any]:
        gpu_id = body["gpu"]["id"]
        price = next(p for g, _, _, p, _ in GPU_TYPES if g == gpu_id)
        pod_id = secrets.token_hex(5)
        env = dict(body.get("env") or {})
        pod: dict[str, Any] = {
            "id": pod_id, "name": body["name"], "image": body["image"],
            "args": body.get("args", ""), "disk": body.get("disk", 50),
            "ports": body.get("ports", []), "env": env, "registry": None,
            "status": "PROVISIONING", "actions": [], "mounts": body.get("mounts", {}),
            "gpu": {"id": gpu_id, "count": body["gpu"].get("count", 1)},
            "cloud": body.get("cloud", "SECURE"), "dataCenterId": "US-KS-2",
            "cudaVersion": "12.8", "ssh": {"proxy": None, "direct": None}, "template": None,
            "cost": round(price * body["gpu"].get("count", 1), 4), "locked": False,
            "globalNetworking": {"enabled": bool(body.get("globalNetworking"))},
            "runtime": None, "createdAt": _now_iso(), "startedAt": None,
        }
        if pod["globalNetworking"]["enabled"]:
            pod["globalNetworking"].update(ip="10.0.0.1", internalDns=f"{pod_id}.runpod.internal")
        if cluster is not None:
            pod["cluster"] = {"id": cluster[0], "rank": cluster[1]}
        self.pods[pod_id] = pod
        self._meta[pod_id] = {"started": self.clock(), "created": self.clock()}
        return pod

    def _compute_s(self, meta: dict[str, float]) -> float:
        """Seconds of compute billed so far: earlier runs, plus the current one."""
        seconds = meta.get("billed_s", 0.0)
        if "stopped" not in meta and meta.get("terminated_at") is None:
            seconds += self.clock() - meta["started"]
        return seconds

    def _halt(self, pod_id: str, how: str) -> None:
        """Stop (``stopped``) or terminate (``terminated_at``) a pod's compute billing."""
        meta = self._meta[pod_id]
        meta["billed_s"] = self._compute_s(meta)
        meta[how] = self.clock()

    def _no_capacity(self, gpu_id: str, count: int) -> bool:
        left = self.capacity.get(gpu_id)
        if left is None:
            return False
        if left < count:
            return True
        self.capacity[gpu_id] = left - count
        return False

    # ---- HTTP -------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes = [
            Route("/v2/pods", self._endpoint("listPods", self.list_pods), methods=["GET"]),
            Route("/v2/pods", self._endpoint("createPod", self.create_pod), methods=["POST"]),
            Route("/v2/pods/{id}", self._endpoint("getPod", self.get_pod), methods=["GET"]),
            Route("/v2/pods/{id}", self._endpoint("deletePod", self.delete_pod),
                  methods=["DELETE"]),
            Route("/v2/pods/{id}/action", self._endpoint("podAction", self.pod_action),
                  methods=["POST"]),
            Route("/v2/clusters", self._endpoint("listClusters", self.list_clusters),
                  methods=["GET"]),
            Route("/v2/clusters", self._endpoint("createCluster", self.create_cluster),
                  methods=["POST"]),
            Route("/v2/clusters/{id}", self._endpoint("deleteCluster", self.delete_cluster),
                  methods=["DELETE"]),
            Route("/v2/clusters/{id}/pods",
                  self._endpoint("listClusterPods", self.cluster_pods), methods=["GET"]),
            Route("/v2/catalog/gpus", self._endpoint("listGpuTypes", self.gpu_types),
                  methods=["GET"]),
            Route("/v2/billing/pods", self._endpoint("listPodBilling", self.pod_billing),
                  methods=["GET"]),
            Route("/_proxy/{target}/healthz", self.proxy_health, methods=["GET"]),
            Route("/_proxy/{target}" + podagent.SECRETS_PATH, self.proxy_secrets,
                  methods=["POST"]),
            Route("/_proxy/{target}/{path:path}", self.proxy_daemon,
                  methods=["GET", "POST", "PUT", "DELETE"]),
        ]
        return Starlette(routes=routes)

    def _rate_headers(self) -> dict[str, str]:
        reset = max(0, int(self._window_start + self.window_s - self.clock()) + 1)
        left = max(0, self.quota - self._window_used)
        return {"RateLimit": f'"minute";r={left};t={reset}',
                "RateLimit-Policy": f'"minute";q={self.quota};w={self.window_s}'}

    def _problem(self, op_id: str, status: int, title: str, detail: str,
                 errors: list[str] | None = None, headers: dict[str, str] | None = None
                 ) -> Response:
        body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
        if errors:
            body["errors"] = errors
        return self._respond(op_id, status, body, headers, problem=True)

    def _respond(self, op_id: str, status: int, body: Any,
                 headers: dict[str, str] | None = None, problem: bool = False) -> Response:
        errors = self.spec.response_errors(op_id, status, body)
        if errors:
            self.invalid_responses.append(f"{op_id} {status}: {errors[:3]}")
            status, body = 500, {"title": "Internal Server Error", "status": 500,
                                 "detail": "fake server produced an invalid response"}
            problem = True
        self.statuses.append((op_id, status))
        headers = {**self._rate_headers(), **(headers or {})}
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers,
                            media_type="application/problem+json" if problem else None)

    def _endpoint(self, op_id: str, handler: Callable[..., tuple[int, Any]]):
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            with self.lock:
                self.calls[op_id] += 1
                if request.headers.get("authorization") != f"Bearer {self.api_key}":
                    return self._problem(op_id, 401, "Unauthorized", "invalid API key")
                now = self.clock()
                if now - self._window_start >= self.window_s:
                    self._window_start, self._window_used = now, 0
                self._window_used += 1
                if self._window_used > self.quota:
                    self.rate_limited += 1
                    wait = int(self._window_start + self.window_s - now) + 1
                    return self._problem(op_id, 429, "Too Many Requests",
                                         f"rate limit of {self.quota} per window exceeded",
                                         headers={"Retry-After": str(wait)})
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._problem(op_id, 400, "Bad Request", "body is not JSON")
                errors = self.spec.request_errors(op_id, body, dict(request.query_params))
                if errors:
                    self.invalid_requests.append(f"{op_id}: {errors}")
                    return self._problem(op_id, 400, "Bad Request",
                                         "the request does not match the API contract",
                                         errors)
                queue = self.injections.get(op_id) or []
                injection = queue[0] if queue else None
                if injection is not None:
                    injection.times -= 1
                    if injection.times <= 0:
                        queue.pop(0)
                    if not injection.commit:
                        return self._injected(op_id, injection)
                status, payload = handler(request, body)
                if injection is not None:
                    return self._injected(op_id, injection)
                if status >= 400:
                    return self._problem(op_id, status, payload[0], payload[1])
                return self._respond(op_id, status, payload)
        return endpoint

    def _injected(self, op_id: str, injection: Injection) -> Response:
        titles = {429: "Too Many Requests", 500: "Internal Server Error",
                  502: "Bad Gateway", 503: "Service Unavailable"}
        headers = {"Retry-After": str(injection.retry_after)} if injection.status == 429 else {}
        return self._problem(op_id, injection.status, titles.get(injection.status, "Error"),
                             "injected failure", headers=headers)

    # ---- handlers: return (status, body) or (status>=400, (title, detail)) ----------------
    def list_pods(self, request: Request, _: Any) -> tuple[int, Any]:
        members = request.query_params.get("includeClusterPods") == "true"
        pods = [self._view(p) for p in self.pods.values() if members or "cluster" not in p]
        now = self.clock()
        pods = [p for p in pods if p["status"] != "TERMINATED"
                or now - self._meta[p["id"]]["terminated_at"] < self.terminate_linger_s]
        return 200, {"pods": pods}

    def create_pod(self, _: Request, body: dict[str, Any]) -> tuple[int, Any]:
        if "gpu" not in body:
            return 400, ("Bad Request", "exactly one of gpu or cpu must be set")
        if not any(g == body["gpu"]["id"] for g, *_ in GPU_TYPES):
            return 400, ("Bad Request", f"unknown GPU type {body['gpu']['id']}")
        if self._no_capacity(body["gpu"]["id"], 1):
            return 400, ("Bad Request", NO_CAPACITY)
        return 201, self._view(self._new_pod(body))

    def _find(self, pod_id: str) -> dict[str, Any] | None:
        pod = self.pods.get(pod_id)
        if pod is None or self._meta[pod_id].get("terminated_at") is not None:
            return None
        return pod

    def get_pod(self, request: Request, _: Any) -> tuple[int, Any]:
        pod = self._find(request.path_params["id"])
        return (200, self._view(pod)) if pod else (404, ("Not Found", "no such pod"))

    def delete_pod(self, request: Request, _: Any) -> tuple[int, Any]:
        pod = self._find(request.path_params["id"])
        if pod is None:
            return 404, ("Not Found", "no such pod")
        if "cluster" in pod:
            return 409, ("Conflict", "cluster member pods are managed through the cluster")
        self._halt(pod["id"], "terminated_at")
        return 204, None

    def pod_action(self, request: Request, body: dict[str, Any]) -> tuple[int, Any]:
        pod = self._find(request.path_params["id"])
        if pod is None:
            return 404, ("Not Found", "no such pod")
        view = self._view(pod)
        action = body["action"]
        self.actions.append((pod["id"], action))
        if "cluster" in pod:
            return 409, ("Conflict", "cluster member pods are managed through the cluster")
        if action not in view["actions"]:
            return 409, ("Conflict", f"cannot {action} a {view['status']} pod")
        if pod["locked"] and action in ("stop", "restart"):
            return 409, ("Conflict", "the pod is locked; unlock it before stopping it")
        meta = self._meta[pod["id"]]
        if action == "terminate":
            self._halt(pod["id"], "terminated_at")
            return 204, None
        if action == "stop":
            self._halt(pod["id"], "stopped")
        else:  # start, restart: a new run from PROVISIONING
            meta["billed_s"] = self._compute_s(meta)
            meta.pop("stopped", None)
            meta["started"] = self.clock()
            self.delivered.pop(pod["id"], None)  # a new boot waits for its secrets again
        return 200, self._view(pod)

    def _cluster_view(self, cluster: dict[str, Any]) -> dict[str, Any]:
        members = [self._view(self.pods[i]) for i in cluster["_pods"]]
        by_status = Counter(p["status"] for p in members)
        view = {k: v for k, v in cluster.items() if not k.startswith("_")}
        view["pods"] = {"total": len(members), "byStatus": dict(by_status)}
        return view

    def list_clusters(self, _: Request, __: Any) -> tuple[int, Any]:
        return 200, {"clusters": [self._cluster_view(c) for c in self.clusters.values()]}

    def create_cluster(self, _: Request, body: dict[str, Any]) -> tuple[int, Any]:
        compute = body["compute"]
        if self._no_capacity(compute["gpuTypeId"], compute["podCount"]):
            return 400, ("Bad Request", NO_CAPACITY)
        cluster_id = secrets.token_hex(5)
        cluster = {"id": cluster_id, "name": body["name"], "type": body["type"],
                   "compute": compute, "createdAt": _now_iso(), "_pods": []}
        for rank in range(compute["podCount"]):
            pod_body = {"name": f"{body['name']}-member-r{rank}", "image": body["image"],
                        "gpu": {"id": compute["gpuTypeId"], "count": compute["gpuCountPerPod"]},
                        "env": {**body.get("env", {}), "NODE_RANK": str(rank),
                                "NUM_NODES": str(compute["podCount"])},
                        "args": body.get("args", ""), "ports": body.get("ports", [])}
            cluster["_pods"].append(self._new_pod(pod_body, (cluster_id, rank))["id"])
        self.clusters[cluster_id] = cluster
        return 201, self._cluster_view(cluster)

    def delete_cluster(self, request: Request, _: Any) -> tuple[int, Any]:
        cluster = self.clusters.pop(request.path_params["id"], None)
        if cluster is None:
            return 404, ("Not Found", "no such cluster")
        for pod_id in cluster["_pods"]:
            self._halt(pod_id, "terminated_at")
        return 204, None

    def cluster_pods(self, request: Request, _: Any) -> tuple[int, Any]:
        cluster = self.clusters.get(request.path_params["id"])
        if cluster is None:
            return 404, ("Not Found", "no such cluster")
        return 200, {"pods": [self._view(self.pods[i]) for i in cluster["_pods"]]}

    def gpu_types(self, request: Request, _: Any) -> tuple[int, Any]:
        with_availability = request.query_params.get("include") == "AVAILABILITY"
        gpus = []
        for gpu_id, name, memory, price, max_count in GPU_TYPES:
            gpu: dict[str, Any] = {
                "id": gpu_id, "name": name, "pool": None, "manufacturer": "NVIDIA",
                "memory": memory, "secure": True, "community": True,
                "price": {"secure": price, "community": round(price * 0.8, 2)},
                "maxCount": {"secure": max_count, "community": max_count // 2},
            }
            if with_availability:
                level = "NONE" if self.capacity.get(gpu_id, 1) <= 0 else "HIGH"
                gpu["availability"] = level
                if level != "NONE":
                    gpu["dataCenters"] = [{"id": "US-KS-2", "name": "US Kansas 2",
                                           "availability": level}]
            gpus.append(gpu)
        return 200, {"gpus": gpus}

    def pod_billing(self, _: Request, __: Any) -> tuple[int, Any]:
        now = self.clock()
        records = []
        for pod in self.pods.values():
            meta = self._meta[pod["id"]]
            gpu = round(pod["cost"] * self._compute_s(meta) / 3600, 6)
            gb = pod["disk"] + (pod["mounts"].get("persistent") or {}).get("size", 0)
            lived = (meta.get("terminated_at") or now) - meta["created"]
            disk = round(self.disk_per_gb_hour * gb * lived / 3600, 6)
            records.append({"startTime": "2026-06-01T00:00:00Z",
                            "endTime": "2026-06-02T00:00:00Z", "podId": pod["id"],
                            "totalAmount": round(gpu + disk, 6), "gpuAmount": gpu,
                            "cpuAmount": 0, "diskAmount": disk})
        totals = {key: round(sum(r[key] for r in records), 6)
                  for key in ("totalAmount", "gpuAmount", "cpuAmount", "diskAmount")}
        return 200, {"records": records, "metadata": {
            "query": {"startTime": "2026-06-01T00:00:00Z", "endTime": "2026-06-02T00:00:00Z",
                      "bucketSize": "day"},
            "recordCount": len(records), "uniquePodCount": len(records), "totals": totals}}

    def _booting(self, pod_id: str) -> dict[str, Any] | None:
        """The pod's agent /healthz body while its bootstrap waits or has failed."""
        pod = self.pods[pod_id]
        if self.bootstrap_failure is not None:
            step, log = self.bootstrap_failure
            return {"status": podagent.FAILED, "step": step, "log": log,
                    "version": self.node_version}
        if "GPUWARDEN_ENROLL_SHA256" in pod["env"] and pod_id not in self.delivered:
            return {"status": podagent.WAITING, "step": podagent.WAITING_STEP,
                    "version": self.node_version}
        return None

    async def proxy_health(self, request: Request) -> Response:
        pod_id = request.path_params["target"].rsplit("-", 1)[0]
        with self.lock:
            pod = self._find(pod_id)
            ready = (pod is not None and self._view(pod)["status"] == "RUNNING"
                     and self.clock() - self._meta[pod_id]["started"] >= self.provisioning_s
                     + self.starting_s + self.bootstrap_s)
            booting = self._booting(pod_id) if ready else None
        if booting is not None:
            return JSONResponse(booting, status_code=503)
        return JSONResponse({"status": "ok", "version": self.node_version}
                            if ready else {"ok": False}, status_code=200 if ready else 502)

    async def proxy_secrets(self, request: Request) -> Response:
        """The pod agent's ``receive``: the key's hash must match the pod's env."""
        pod_id = request.path_params["target"].rsplit("-", 1)[0]
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = await request.json()
        with self.lock:
            pod = self._find(pod_id)
            if pod is None or "GPUWARDEN_ENROLL_SHA256" not in pod["env"]:
                return JSONResponse({"detail": "nothing to receive"}, status_code=404)
            if hashlib.sha256(key.encode()).hexdigest() != pod["env"][
                    "GPUWARDEN_ENROLL_SHA256"]:
                return JSONResponse({"detail": "wrong key"}, status_code=401)
            if pod_id in self.delivered:
                return JSONResponse({"detail": "delivered already"}, status_code=409)
            token, munge = podagent.check_secrets(body)
            self.deliveries[pod_id] += 1
            self.delivered[pod_id] = {"node_token": token,
                                      "munge_key_b64": base64.b64encode(munge).decode()}
        return Response(status_code=204)

    async def proxy_daemon(self, request: Request) -> Response:
        """The rest of a running pod's daemon API: forwarded to the real node daemon
        ``daemons`` names for the pod (with that daemon's token), 502 when none."""
        pod_id = request.path_params["target"].rsplit("-", 1)[0]
        with self.lock:
            pod = self._find(pod_id)
            running = pod is not None and self._view(pod)["status"] == "RUNNING"
            upstream = self.daemons.get(pod["name"]) if running and pod else None
        if upstream is None:
            return JSONResponse({"detail": "no daemon behind this pod"}, status_code=502)
        url, token_file = upstream
        async with httpx.AsyncClient(timeout=120) as http:
            answer = await http.request(
                request.method, f"{url}/{request.path_params['path']}",
                params=request.query_params, content=await request.body(),
                headers={"Authorization": f"Bearer {token_file.read_text().strip()}",
                         "Content-Type": request.headers.get("content-type",
                                                             "application/json")})
        return Response(answer.content, answer.status_code,
                        media_type=answer.headers.get("content-type"))

    # ---- running ----------------------------------------------------------------------
    def start(self) -> FakeRunPod:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning",
                                                     access_log=False))
        thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                  daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = thread
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
