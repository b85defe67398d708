"""``provider: runpod``: pods with global networking (``runpod.mode: pods``) or one
Instant Cluster (``runpod.mode: cluster``), each bootstrapping itself into a Slurm
cluster.  Pods are named ``gw-<cluster>-<index>`` (the tag): ``up`` twice creates nothing
new, and ``down`` finds every pod of the cluster, orphans included, by that name.

One node stops through RunPod's ``POST /v2/pods/{id}/action`` (``stop``, ``start``); by the
v2 spec a stopped pod releases its GPU/CPU compute, keeps its disk and machine, reads
EXITED (reported here as STOPPED) with ``cost`` 0.0, while its billing records still carry
a ``diskAmount``: only deleting the pod (``terminate``, ``down``) ends every charge.  An
Instant Cluster's member pods cannot be stopped or removed one by one."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpuwarden import __version__
from gpuwarden.gpu.wire import version_mismatch
from gpuwarden.providers.base import (
    RUNNING,
    STOPPED,
    Clock,
    DownReport,
    NodeRecord,
    Progress,
    ProviderError,
    SystemClock,
    Workspace,
    node_index,
)
from gpuwarden.providers.bootstrap import render_script
from gpuwarden.providers.enroll import deliver_secrets, enrollment_env
from gpuwarden.providers.health import Probe, probe
from gpuwarden.providers.install import install_env
from gpuwarden.providers.runpod.client import AmbiguousCreate, RunPodClient, RunPodProblem
from gpuwarden.providers.spec import ClusterDescription, cannot_stop

PROXY_URL = "https://{pod_id}-{port}.proxy.runpod.net"
_CAPACITY = re.compile(r"no longer any instances|no .*available|capacity|not available",
                       re.IGNORECASE)
START_COMMAND = ("bash -c 'printf %s \"$GPUWARDEN_BOOTSTRAP_B64\" | base64 -d "
                 "> /tmp/gpuwarden-bootstrap.sh && exec bash /tmp/gpuwarden-bootstrap.sh'")


def pod_name(cluster: str, index: int) -> str:
    return f"gw-{cluster}-{index}"


def pod_index(cluster: str, name: str) -> int | None:
    match = re.fullmatch(rf"gw-{re.escape(cluster)}-(\d+)", name)
    return int(match.group(1)) if match else None


@dataclass
class RunPodProvider:
    client: RunPodClient
    home: Path
    http: httpx.Client               # for the node daemons' /healthz (not the API)
    clock: Clock = field(default_factory=SystemClock)
    poll_interval_s: float = 5.0
    start_timeout_s: float = 1800.0
    node_url_template: str = PROXY_URL
    kind: str = "runpod"
    _catalog: dict[str, Any] | None = None
    _install: dict[str, str] | None = None  # the pods' install env, checked once per run

    # ---- quote and capacity -------------------------------------------------------------
    def quote(self, spec: ClusterDescription) -> float:
        gpu = self._gpu_type(spec)
        cloud = spec.runpod.cloud.lower()
        if not gpu.get(cloud):
            raise self._no_capacity(spec, f"{spec.gpu_type} is not offered in the "
                                          f"{spec.runpod.cloud} cloud")
        max_count = (gpu.get("maxCount") or {}).get(cloud, 0)
        if max_count and spec.gpus_per_node > max_count:
            raise ProviderError(f"gpus_per_node: {spec.gpu_type} machines have at most "
                                f"{max_count} GPUs in the {spec.runpod.cloud} cloud; "
                                f"set gpus_per_node: {max_count} or less")
        if gpu.get("availability") == "NONE" or not self._in_region(spec, gpu):
            where = f" in {', '.join(spec.region)}" if spec.region else ""
            raise self._no_capacity(spec, f"no capacity for {spec.gpus_per_node} x "
                                          f"{spec.gpu_type}{where} right now")
        return float(gpu["price"][cloud]) * spec.gpus_per_node * spec.nodes

    def _catalog_for(self, spec: ClusterDescription) -> dict[str, Any]:
        if self._catalog is None:
            gpus = self.client.gpu_types(spec.gpus_per_node, spec.runpod.cloud)
            self._catalog = {g["id"]: g for g in gpus}
        return self._catalog

    def _gpu_type(self, spec: ClusterDescription) -> dict[str, Any]:
        catalog = self._catalog_for(spec)
        gpu = catalog.get(spec.gpu_type or "")
        if gpu is None:
            names = ", ".join(sorted(catalog)[:8])
            raise ProviderError(f"gpu_type: {spec.gpu_type!r} is not in RunPod's catalog; "
                                f"use one of: {names}")
        return gpu

    @staticmethod
    def _in_region(spec: ClusterDescription, gpu: dict[str, Any]) -> bool:
        if not spec.region or "dataCenters" not in gpu:
            return True
        return any(dc["id"] in spec.region and dc["availability"] != "NONE"
                   for dc in gpu["dataCenters"])

    def _no_capacity(self, spec: ClusterDescription, why: str) -> ProviderError:
        cloud = spec.runpod.cloud.lower()
        options = sorted(
            (g for g in self._catalog_for(spec).values()
             if g["id"] != spec.gpu_type and g.get(cloud)
             and g.get("availability") not in (None, "NONE")),
            key=lambda g: g["price"][cloud])
        alternatives = [f"{g['id']} (${g['price'][cloud]:.2f}/GPU/hr, {g['availability']})"
                        for g in options[:5]]
        text = f"{why}; set gpu_type: to another type"
        if alternatives:
            text += " — available now: " + "; ".join(alternatives)
        return ProviderError(text, alternatives)

    # ---- up ---------------------------------------------------------------------------
    def provision(self, spec: ClusterDescription, progress: Progress) -> list[NodeRecord]:
        progress("checking the install source")
        self._install_env(spec)  # refused here, before any pod is created
        if spec.runpod.mode == "cluster":
            self._ensure_instant_cluster(spec, progress)
        else:
            self._ensure_pods(spec, progress)
        pods = self._wait_running(spec, progress)
        return self._wait_healthy(spec, pods, progress)

    def _ensure_pods(self, spec: ClusterDescription, progress: Progress) -> None:
        mine = self._my_pods(spec)
        for index in range(1, spec.nodes + 1):
            pods = mine.get(index, [])
            for extra in pods[1:]:  # a duplicate from an earlier run: keep the oldest
                progress(f"terminating duplicate pod {extra['id']} ({extra['name']})")
                self.client.delete_pod(extra["id"])
            if pods:
                if pods[0]["status"] in ("EXITED", "ERROR"):
                    progress(f"starting stopped pod {pods[0]['name']}")
                    self._action(pods[0], "start", _STARTED)
                continue
            controller = mine.get(1, [None])[0]
            body = self._pod_body(spec, index, controller["id"] if controller else None)
            progress(f"creating pod {body['name']}")
            mine[index] = [self._create_once(spec, body)]

    def _create_once(self, spec: ClusterDescription, body: dict[str, Any]) -> dict[str, Any]:
        """Create a pod; after an ambiguous failure look it up by name before retrying."""
        for attempt in range(1, self.client.max_attempts + 1):
            try:
                return self.client.create_pod(body)
            except AmbiguousCreate:
                found = [p for p in self.client.list_pods()
                         if p["name"] == body["name"] and p["status"] != "TERMINATED"]
                if found:
                    return found[0]
                self.clock.sleep(min(30.0, self.client.backoff_s * 2 ** attempt))
            except RunPodProblem as exc:
                if exc.status == 400 and _CAPACITY.search(exc.detail):
                    self._catalog = None
                    raise self._no_capacity(spec, f"RunPod has no capacity for "
                                                  f"{spec.gpu_type}: {exc.detail}") from None
                raise
        raise ProviderError(f"creating pod {body['name']}: RunPod kept failing; run "
                            "`gpuwarden up` again later (nothing is duplicated)")

    def _ensure_instant_cluster(self, spec: ClusterDescription, progress: Progress) -> None:
        name = f"gw-{spec.name}"
        found = [c for c in self.client.list_clusters() if c["name"] == name]
        for extra in found[1:]:
            self.client.delete_cluster(extra["id"])
        if found:
            return
        body: dict[str, Any] = {
            "name": name, "type": "TRAINING", "image": spec.pod_image,
            "compute": {"gpuTypeId": spec.gpu_type, "gpuCountPerPod": spec.gpus_per_node,
                        "podCount": spec.nodes},
            "env": self._env(spec, None, None), "args": START_COMMAND,
            "ports": [f"{spec.runpod.node_port}/http"], "disk": spec.disk_gb,
        }
        if spec.region:
            body["dataCenterIds"] = list(spec.region)
        if mounts := self._mounts(spec):
            body["mounts"] = mounts
        progress(f"creating Instant Cluster {name} ({spec.nodes} pods)")
        try:
            self.client.create_cluster(body)
        except AmbiguousCreate:
            if not any(c["name"] == name for c in self.client.list_clusters()):
                raise ProviderError(f"creating Instant Cluster {name}: RunPod failed; run "
                                    "`gpuwarden up` again (nothing is duplicated)") from None

    def _install_env(self, spec: ClusterDescription) -> dict[str, str]:
        if self._install is None:
            self._install = install_env(spec, self.http)
        return self._install

    def _env(self, spec: ClusterDescription, index: int | None,
             controller_id: str | None) -> dict[str, str]:
        """The pod's environment: no secret in it (the node token and munge key are
        delivered once per boot: :mod:`gpuwarden.providers.enroll`)."""
        env = {
            "GPUWARDEN_CLUSTER": spec.name,
            "GPUWARDEN_GPUS_PER_NODE": str(spec.gpus_per_node),
            "GPUWARDEN_NODE_PORT": str(spec.runpod.node_port),
            "GPUWARDEN_SLURM": "1" if spec.slurm else "0",
            **self._install_env(spec),
            **enrollment_env(Workspace(self.home, spec.name)),
            "GPUWARDEN_BOOTSTRAP_B64": base64.b64encode(render_script().encode()).decode(),
        }
        if index is not None:  # pods mode; an Instant Cluster sets NODE_RANK itself
            env["GPUWARDEN_NODE_RANK"] = str(index - 1)
            env["GPUWARDEN_NUM_NODES"] = str(spec.nodes)
        if controller_id is not None and index != 1:
            env["GPUWARDEN_CONTROLLER_ADDR"] = f"{controller_id}.runpod.internal"
        return env

    @staticmethod
    def _mounts(spec: ClusterDescription) -> dict[str, Any]:
        if spec.network_volume:
            return {"network": [{"volumeId": spec.network_volume, "path": "/workspace"}]}
        if spec.volume_gb:
            return {"persistent": {"size": spec.volume_gb, "path": "/workspace"}}
        return {}

    def _pod_body(self, spec: ClusterDescription, index: int,
                  controller_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": pod_name(spec.name, index), "image": spec.pod_image,
            "gpu": {"id": spec.gpu_type, "count": spec.gpus_per_node},
            "cloud": spec.runpod.cloud, "disk": spec.disk_gb,
            "ports": [f"{spec.runpod.node_port}/http"],
            "globalNetworking": spec.nodes > 1,
            "env": self._env(spec, index, controller_id), "args": START_COMMAND,
        }
        if spec.region:
            body["dataCenterIds"] = list(spec.region)
        if mounts := self._mounts(spec):
            body["mounts"] = mounts
        return body

    # ---- observing ----------------------------------------------------------------------
    def _my_pods(self, spec: ClusterDescription) -> dict[int, list[dict[str, Any]]]:
        """Live pods of the cluster by index, oldest first (found by name or membership)."""
        include_members = spec.runpod.mode == "cluster"
        mine: dict[int, list[dict[str, Any]]] = {}
        cluster_ids = set()
        if include_members:
            cluster_ids = {c["id"] for c in self.client.list_clusters()
                           if c["name"] == f"gw-{spec.name}"}
        for pod in self.client.list_pods(include_cluster_pods=include_members):
            if pod["status"] == "TERMINATED":
                continue
            index = pod_index(spec.name, pod["name"])
            member = pod.get("cluster") or {}
            if index is None and member.get("id") in cluster_ids and member.get("rank") is not None:
                index = int(member["rank"]) + 1
            if index is not None:
                mine.setdefault(index, []).append(pod)
        for pods in mine.values():
            pods.sort(key=lambda p: p["createdAt"])
        return mine

    def _url(self, spec: ClusterDescription, pod: dict[str, Any]) -> str:
        return self.node_url_template.format(pod_id=pod["id"], port=spec.runpod.node_port)

    def _probe(self, spec: ClusterDescription, pod: dict[str, Any]) -> Probe | None:
        """What the pod answers on /healthz (None: it is not RUNNING)."""
        return probe(self.http, self._url(spec, pod)) if pod["status"] == RUNNING else None

    def _record(self, spec: ClusterDescription, index: int, pod: dict[str, Any],
                check: bool = False, seen: Probe | None = None) -> NodeRecord:
        url = self._url(spec, pod)
        gpus = _gpus_seen(pod)
        detail = ""
        if pod["status"] == RUNNING and gpus is not None and gpus < spec.gpus_per_node:
            detail = (f"pod {pod['name']} is running with {gpus} of {spec.gpus_per_node} GPUs "
                      "(a stopped pod can come back on a machine without free GPUs); "
                      f"`gpuwarden down {spec.name}` then `gpuwarden up` to replace it")
        if check and seen is None:
            seen = self._probe(spec, pod)
        ok = None if seen is None else seen.healthy
        if seen is not None and (why := _bootstrap_problem(pod, seen)):
            detail = f"{detail}; {why}" if detail else why
        # EXITED is where RunPod's stop action moves a pod: compute released, `cost` 0.0
        status = STOPPED if pod["status"] == "EXITED" else pod["status"]
        return NodeRecord(
            name=f"{spec.name}-node{index}", index=index,
            role="controller" if index == 1 else "worker", status=status, url=url,
            token_file=Workspace(self.home, spec.name).token_file(spec.name),
            cost_per_hour=0.0 if status == STOPPED else float(pod.get("cost") or 0.0),
            gpus=gpus, provider_id=pod["id"], healthy=ok, detail=detail)

    def observe(self, spec: ClusterDescription) -> list[NodeRecord]:
        mine = self._my_pods(spec)
        return [self._record(spec, i, pods[0], check=True) for i, pods in sorted(mine.items())]

    def _wait_running(self, spec: ClusterDescription, progress: Progress,
                      indices: list[int] | None = None) -> dict[int, dict[str, Any]]:
        """Wait until every pod (or those of ``indices``) is RUNNING with all its GPUs."""
        deadline = self.clock.monotonic() + self.start_timeout_s
        expected = spec.nodes if indices is None else len(indices)
        while True:
            mine = {i: pods[0] for i, pods in self._my_pods(spec).items()
                    if indices is None or i in indices}
            states = {i: p["status"] for i, p in mine.items()}
            broken = [p for p in mine.values() if p["status"] == "ERROR"]
            if broken:
                raise ProviderError(f"pod {broken[0]['name']} ({broken[0]['id']}) is in "
                                    "ERROR; see its logs in the RunPod console, then "
                                    f"`gpuwarden down {spec.name}`")
            running = sum(1 for s in states.values() if s == RUNNING)
            progress(f"{running}/{expected} pods running")
            if len(mine) >= expected and running == len(mine):
                for i, pod in mine.items():
                    record = self._record(spec, i, pod)
                    if record.detail:
                        raise ProviderError(record.detail)
                return mine
            if self.clock.monotonic() > deadline:
                raise ProviderError(f"pods not RUNNING after {self.start_timeout_s:.0f}s: "
                                    f"{states}; `gpuwarden up` again resumes")
            self.clock.sleep(self.poll_interval_s)

    def _wait_healthy(self, spec: ClusterDescription, pods: dict[int, dict[str, Any]],
                      progress: Progress) -> list[NodeRecord]:
        deadline = self.clock.monotonic() + self.start_timeout_s
        ws = Workspace(self.home, spec.name)
        while True:
            records = []
            for i, pod in sorted(pods.items()):
                seen = self._probe(spec, pod)
                if seen is not None and seen.bootstrap == "waiting":
                    progress(f"delivering the secrets of pod {pod['name']}")
                    deliver_secrets(self.http, ws, self._url(spec, pod), pod["name"])
                record = self._record(spec, i, pod, seen=seen)
                if seen is not None and (seen.bootstrap == "failed" or _mismatch(seen)):
                    raise ProviderError(record.detail)
                records.append(record)
            waiting = [r.name for r in records if not r.healthy]
            if not waiting:
                return records
            progress(f"waiting for bootstrap on {', '.join(waiting)}")
            if self.clock.monotonic() > deadline:
                raise ProviderError(f"node daemons {waiting} did not answer /healthz after "
                                    f"{self.start_timeout_s:.0f}s; check the pods' logs")
            self.clock.sleep(self.poll_interval_s)

    def cost_so_far(self, spec: ClusterDescription, nodes: list[NodeRecord]) -> float | None:
        ids = {n.provider_id for n in nodes}
        billing = self.client.pod_billing()
        return sum(r["totalAmount"] for r in billing["records"] if r["podId"] in ids)

    # ---- down -------------------------------------------------------------------------
    def teardown(self, spec: ClusterDescription, progress: Progress) -> DownReport:
        terminated: list[str] = []
        deadline = self.clock.monotonic() + self.start_timeout_s
        while True:
            if spec.runpod.mode == "cluster":
                for c in self.client.list_clusters():
                    if c["name"] == f"gw-{spec.name}":
                        progress(f"deleting Instant Cluster {c['name']}")
                        self.client.delete_cluster(c["id"])
                        terminated.append(c["id"])
            pods = [p for group in self._my_pods(spec).values() for p in group]
            if not pods:
                return DownReport(spec.name, tuple(terminated))
            terminated += self._delete_pods(pods, progress)
            if self.clock.monotonic() > deadline:
                left = ", ".join(p["name"] for p in pods)
                raise ProviderError(f"pods still listed after terminating: {left}; run "
                                    f"`gpuwarden down {spec.name}` again")
            self.clock.sleep(self.poll_interval_s)


    def _delete_pods(self, pods: list[dict[str, Any]], progress: Progress) -> list[str]:
        """Delete each pod (stopped ones included: a stopped pod still bills its disk);
        Instant Cluster members go with their cluster instead."""
        deleted = []
        for pod in pods:
            if pod.get("cluster"):
                continue
            progress(f"terminating pod {pod['name']} ({pod['id']})")
            self.client.delete_pod(pod["id"])
            deleted.append(pod["name"])
        return deleted

    # ---- one node -----------------------------------------------------------------------
    def stop(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        """``{"action": "stop"}`` on the node's pod, then wait until it reads EXITED: GPU
        billing ends (``cost_per_hour`` 0), the disk is kept (and still billed) until the
        pod is started again or terminated.  A node without a pod is returned MISSING."""
        index, pods = self._node_pods(spec, node_name)
        if not pods:
            return self._missing(spec, index)
        pod = pods[0]
        if pod["status"] == "ERROR":
            raise ProviderError(f"pod {pod['name']} ({pod['id']}) is in ERROR and RunPod cannot "
                                "stop it; terminate it instead (autostop action: terminate, "
                                f"or `gpuwarden down {spec.name}`)")
        if pod["status"] != "EXITED":
            progress(f"stopping pod {pod['name']} ({pod['id']})")
            self._action(pod, "stop", frozenset({"EXITED"}))
        return self._record(spec, index, self._wait_for(spec, index, "EXITED"))

    def start(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        """``{"action": "start"}`` on the node's stopped pod (a terminated node gets a new
        pod), then wait until it is RUNNING with all its GPUs and answering /healthz."""
        index, pods = self._node_pods(spec, node_name)
        if not pods:
            controller = self._my_pods(spec).get(1, [None])[0]
            body = self._pod_body(spec, index, controller["id"] if controller else None)
            progress(f"creating pod {body['name']}")
            self._create_once(spec, body)
        elif pods[0]["status"] in ("EXITED", "ERROR"):
            progress(f"starting stopped pod {pods[0]['name']} ({pods[0]['id']})")
            self._action(pods[0], "start", _STARTED)
        running = self._wait_running(spec, progress, [index])
        return self._wait_healthy(spec, running, progress)[0]

    def terminate(self, spec: ClusterDescription, node_name: str,
                  progress: Progress) -> NodeRecord:
        """Delete the node's pod (``down`` for one node: its disk goes too) and wait until
        RunPod no longer lists it; ``up`` creates a new one."""
        index, _ = self._node_pods(spec, node_name)
        deadline = self.clock.monotonic() + self.start_timeout_s
        while True:
            pods = self._my_pods(spec).get(index, [])
            if not pods:
                return self._missing(spec, index, "TERMINATED")
            self._delete_pods(pods, progress)
            if self.clock.monotonic() > deadline:
                raise ProviderError(f"pod of {node_name} still listed after terminating; run "
                                    "it again")
            self.clock.sleep(self.poll_interval_s)

    def _node_pods(self, spec: ClusterDescription,
                   node_name: str) -> tuple[int, list[dict[str, Any]]]:
        if why := cannot_stop(spec):
            raise ProviderError(why)
        index = node_index(spec, node_name)
        return index, self._my_pods(spec).get(index, [])

    def _missing(self, spec: ClusterDescription, index: int,
                 status: str = "MISSING") -> NodeRecord:
        return NodeRecord(name=f"{spec.name}-node{index}", index=index,
                          role="controller" if index == 1 else "worker", status=status,
                          token_file=Workspace(self.home, spec.name).token_file(spec.name))

    def _action(self, pod: dict[str, Any], action: str, done: frozenset[str]) -> None:
        """A pod action; a 409 (the status no longer allows it: a retried action that took
        effect, or a concurrent one) is fine when the pod is now where the action leads."""
        try:
            self.client.pod_action(pod["id"], action)
        except RunPodProblem as exc:
            now = self.client.get_pod(pod["id"]) if exc.status == 409 else None
            if now is None or now["status"] not in done:
                raise ProviderError(f"{action} pod {pod['name']} ({pod['id']}): {exc}"
                                    ) from None

    def _wait_for(self, spec: ClusterDescription, index: int, status: str) -> dict[str, Any]:
        deadline = self.clock.monotonic() + self.start_timeout_s
        while True:
            pods = self._my_pods(spec).get(index, [])
            if pods and pods[0]["status"] == status:
                return pods[0]
            if self.clock.monotonic() > deadline:
                seen = pods[0]["status"] if pods else "gone"
                raise ProviderError(f"pod {pod_name(spec.name, index)} not {status} after "
                                    f"{self.start_timeout_s:.0f}s (it is {seen})")
            self.clock.sleep(self.poll_interval_s)


_STARTED = frozenset({"PROVISIONING", "STARTING", "RUNNING"})
LOG_LINES_SHOWN = 8  # of a failed bootstrap's log, in `up`'s error and `status`


def _mismatch(seen: Probe) -> str | None:
    """Why the node's gpuwarden is not this control plane's (a daemon that is still
    starting reports no version: nothing to say yet)."""
    return version_mismatch(seen.version, __version__) if seen.version else None


def _bootstrap_problem(pod: dict[str, Any], seen: Probe) -> str:
    """What is wrong with the pod's gpuwarden, from its /healthz ("" when nothing)."""
    if seen.bootstrap == "failed":
        tail = " | ".join(line.strip() for line in seen.log.splitlines()[-LOG_LINES_SHOWN:]
                          if line.strip())
        return (f"pod {pod['name']}: bootstrap failed at step {seen.step!r}: "
                f"{tail or 'no output'}; `gpuwarden down` the cluster (ends its billing), "
                "fix the cause and `up` again")
    mismatch = _mismatch(seen)
    return f"pod {pod['name']}: {mismatch}" if mismatch else ""


def _gpus_seen(pod: dict[str, Any]) -> int | None:
    """GPUs the running pod actually has: ``runtime.gpus`` when reported, else ``gpu.count``."""
    runtime = pod.get("runtime") or {}
    if "gpus" in runtime:
        return len(runtime["gpus"])
    gpu = pod.get("gpu")
    return int(gpu.get("count", 1)) if gpu else 0
