"""``provider: local``: nodes are ``gpuwarden node`` processes on this machine with
simulated GPUs, joined into a real local Slurm cluster when Slurm is installed and we are
root (node 1 is the controller).

Stopping a node stops it for real: its Slurm node is drained, its node daemon and its
``slurmd`` are terminated, and a ``stopped`` file in its directory tells ``observe`` it was
stopped on purpose (STOPPED, $0/hr), not crashed (EXITED).  ``start`` (and ``up``) starts
both again and resumes the Slurm node.

A new node joins Slurm drained (``gpuwarden: burn-in``) until ``up``'s burn-in passes
(``lifecycle.burn_in``), and its simulated GPUs read their faults from the ``sim-fault``
file in its directory while it runs (``gpu.sim``), so a test can break a node and mend it."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gpuwarden import processes
from gpuwarden.providers.base import (
    RUNNING,
    STOP_REASON,
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
from gpuwarden.providers.health import healthy
from gpuwarden.providers.secrets import ensure_token
from gpuwarden.providers.spec import ClusterDescription
from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmError
from gpuwarden.slurm.model import SlurmNode

STOPPED_FILE = "stopped"  # in a node's directory: stopped on purpose (by stop), not crashed
# in a node's directory: its simulated GPUs' faults (gpu.sim syntax), read while it runs
SIM_FAULT_FILE = "sim-fault"
_BUSY = frozenset({"allocated", "mixed", "completing", "draining"})


def slurm_unavailable() -> str | None:
    """Why a local Slurm cluster cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "not root (a local Slurm cluster needs root)"
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sbatch")
               if shutil.which(b, path=path) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y slurm-wlm munge)"
    return None


def slurm_available() -> bool:
    return slurm_unavailable() is None


@dataclass
class LocalProvider:
    home: Path
    http: httpx.Client
    clock: Clock = field(default_factory=SystemClock)
    start_timeout_s: float = 60.0
    use_slurm: Callable[[], bool] = slurm_available
    kind: str = "local"

    # ---- layout -----------------------------------------------------------------------
    def _dir(self, spec: ClusterDescription) -> Path:
        return Workspace(self.home, spec.name).directory / "local"

    def _tag(self, spec: ClusterDescription) -> str:
        return f"local:{self._dir(spec)}"

    def _slurm(self, spec: ClusterDescription) -> LocalSlurmCluster:
        # Slurm's node names are the inventory's, so an action on an alert's node (drain)
        # names the right Slurm node.  Each node gets 4 CPUs per GPU whatever this machine
        # has (slurmd reports the configured ones), so GPU jobs are not starved of CPUs.
        return LocalSlurmCluster(self._dir(spec) / "slurm", nodes=spec.nodes,
                                 gpus_per_node=spec.gpus_per_node, cluster_name=spec.name,
                                 node_prefix=f"{spec.name}-node",
                                 cpus_per_node=max(2, 4 * spec.gpus_per_node), memory_mb=4096,
                                 gpu_type=_slurm_gpu_type(spec.gpu_type), slurmd_timeout=30,
                                 extra_conf={"SlurmdParameters": "config_overrides",
                                             "MessageTimeout": "5"})

    @staticmethod
    def node_name(spec: ClusterDescription, index: int) -> str:
        return f"{spec.name}-node{index}"

    # ---- protocol ---------------------------------------------------------------------
    def quote(self, spec: ClusterDescription) -> float:
        return spec.nodes * self._node_cost(spec)

    @staticmethod
    def _node_cost(spec: ClusterDescription) -> float:
        """A node's $/hr: what `quote` (and so the budget check) and `status` both use."""
        return spec.price_per_gpu_hour * spec.gpus_per_node

    def provision(self, spec: ClusterDescription, progress: Progress) -> list[NodeRecord]:
        slurm = self._ensure_slurm(spec, progress)
        for index in range(1, spec.nodes + 1):
            if slurm is not None and processes.read_pid(self._node_dir(spec, index) / "pid") \
                    is None:  # a new node joins Slurm drained until its burn-in passes
                self._hold_for_burn_in(slurm, self.node_name(spec, index), progress)
            self._start_node(spec, index, slurm, progress)
        records = self._wait_healthy(spec, progress)
        if slurm is not None:
            self._rejoin(slurm, spec.node_names, progress)
        return records

    def observe(self, spec: ClusterDescription) -> list[NodeRecord]:
        return [self._record(spec, i) for i in range(1, spec.nodes + 1)]

    def cost_so_far(self, spec: ClusterDescription, nodes: list[NodeRecord]) -> float | None:
        return 0.0

    def teardown(self, spec: ClusterDescription, progress: Progress) -> DownReport:
        """Node daemons, then Slurm (which cancels its jobs and stops their processes),
        then anything else carrying the cluster's tag.  Job processes carry the tag too
        (sbatch passes the node daemon's environment on): they are Slurm's to stop, so a
        clean stop says nothing about them; only what outlives Slurm is reported, in one
        line."""
        stopped: list[str] = []
        daemons: list[int] = []
        for index in range(1, spec.nodes + 1):
            pid = processes.read_pid(self._node_dir(spec, index) / "pid")
            if pid is not None and processes.alive(pid) and self._ours(spec, pid):
                daemons.append(pid)
                stopped.append(self.node_name(spec, index))
        if daemons:
            progress(f"stopping {len(daemons)} node daemon(s)")
            processes.terminate_all(daemons)
        slurm = self._slurm(spec)
        if slurm.conf_path.exists():
            progress("stopping the local Slurm cluster and its jobs")
            try:
                slurm.down()
            except (SlurmError, OSError) as exc:
                raise ProviderError(f"local Slurm cluster: {exc}") from None
        orphans = processes.tagged(self._tag(spec))
        if orphans:
            progress(f"stopping {len(orphans)} leftover process(es) of cluster {spec.name}")
            processes.terminate_all(orphans)
        left = processes.tagged(self._tag(spec))
        if left:
            raise ProviderError(f"processes of cluster {spec.name} still running: {left}")
        return DownReport(spec.name, tuple(stopped), tuple(f"pid {p}" for p in orphans))

    def stop(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        """Drain the node in Slurm (unless it is drained already), then stop its node daemon
        and its slurmd; the node reads STOPPED at $0/hr until :meth:`start`.  Refused while
        Slurm jobs still run on it (a drain this call made is undone then)."""
        index = node_index(spec, node_name)
        record = self._record(spec, index, check=False)
        if record.status in (STOPPED, "MISSING"):
            return record
        slurm = self._configured_slurm(spec)
        if slurm is not None and processes.alive(_slurmctld_pid(slurm)):
            self._drain_for_stop(slurm, node_name, progress)
        node_dir = self._node_dir(spec, index)
        (node_dir / STOPPED_FILE).write_text(f"{self.clock.time():.0f}\n")
        pid = processes.read_pid(node_dir / "pid")
        if pid is not None and processes.alive(pid) and self._ours(spec, pid):
            progress(f"stopping the node daemon of {node_name}")
            processes.terminate(pid)
        if slurm is not None:
            progress(f"stopping slurmd of {node_name}")
            try:
                slurm.stop_node(node_name)
            except (SlurmError, OSError) as exc:
                raise ProviderError(f"local Slurm cluster: {exc}") from None
        return self._record(spec, index, check=False)

    def start(self, spec: ClusterDescription, node_name: str, progress: Progress) -> NodeRecord:
        """Start the node's slurmd and daemon again, wait for /healthz, and put the node
        back in service in Slurm (resumed if drained by a stop or DOWN while stopped)."""
        index = node_index(spec, node_name)
        slurm = self._ensure_slurm(spec, progress)
        self._start_node(spec, index, slurm, progress)
        record = self._wait_healthy(spec, progress, [index])[0]
        if slurm is not None:
            self._rejoin(slurm, [node_name], progress)
        return record

    def terminate(self, spec: ClusterDescription, node_name: str,
                  progress: Progress) -> NodeRecord:
        """:meth:`stop`, then forget the node's process files: it reads MISSING, and ``up``
        starts it anew (its Slurm node stays defined, drained, until then)."""
        index = node_index(spec, node_name)
        self.stop(spec, node_name, progress)
        for leftover in (STOPPED_FILE, "pid", "port"):
            (self._node_dir(spec, index) / leftover).unlink(missing_ok=True)
        return self._record(spec, index, check=False)

    # ---- helpers ----------------------------------------------------------------------
    def _node_dir(self, spec: ClusterDescription, index: int) -> Path:
        return self._dir(spec) / f"node{index}"

    def _ours(self, spec: ClusterDescription, pid: int) -> bool:
        return processes.tag_of(pid) == self._tag(spec)

    def _port(self, spec: ClusterDescription, index: int) -> int:
        port_file = self._node_dir(spec, index) / "port"
        if port_file.exists():
            return int(port_file.read_text())
        port = processes.free_port()
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.write_text(f"{port}\n")
        return port

    def _configured_slurm(self, spec: ClusterDescription) -> LocalSlurmCluster | None:
        """The cluster's local Slurm cluster when it has one written (running or not)."""
        if not (spec.slurm and self.use_slurm()):
            return None
        slurm = self._slurm(spec)
        return slurm if slurm.conf_path.exists() else None

    def _ensure_slurm(self, spec: ClusterDescription,
                      progress: Progress) -> LocalSlurmCluster | None:
        """The running local Slurm cluster (started when its controller is not running; a
        stopped node's slurmd is left to :meth:`_start_node`), or None without Slurm."""
        if not spec.slurm:
            return None
        if not self.use_slurm():
            progress("Slurm is not installed or we are not root: nodes run without Slurm")
            return None
        slurm = self._slurm(spec)
        state = slurm.status()
        core = [p for p in state.processes if not p.name.startswith("slurmd.")]
        if state.running or (state.configured and core and all(p.alive for p in core)):
            return slurm
        progress("starting the local Slurm cluster")
        slurm.progress = progress
        try:
            slurm.up()
        except (SlurmError, OSError) as exc:
            raise ProviderError(f"local Slurm cluster: {exc}") from None
        return slurm

    def _start_node(self, spec: ClusterDescription, index: int,
                    slurm: LocalSlurmCluster | None, progress: Progress) -> None:
        """The node's slurmd and daemon running (each started only when it is not)."""
        if slurm is not None:
            try:
                slurm.start_node(self.node_name(spec, index))
            except (SlurmError, OSError) as exc:
                raise ProviderError(f"local Slurm cluster: {exc}") from None
        self._ensure_daemon(spec, index, slurm, progress)
        (self._node_dir(spec, index) / STOPPED_FILE).unlink(missing_ok=True)

    def _hold_for_burn_in(self, slurm: LocalSlurmCluster, name: str,
                          progress: Progress) -> None:
        """Drain a node before its slurmd first registers, so no job lands on it before
        ``up``'s burn-in (``lifecycle.burn_in``) has checked it."""
        from gpuwarden.checks import BURN_IN_REASON

        progress(f"{name}: joins Slurm drained ({BURN_IN_REASON})")
        try:
            SlurmActions(slurm.adapter(timeout=10.0)).drain(name, BURN_IN_REASON)
        except SlurmError as exc:
            raise ProviderError(f"local Slurm cluster: draining {name} for its burn-in: "
                                f"{exc}") from None

    def _drain_for_stop(self, slurm: LocalSlurmCluster, name: str, progress: Progress) -> None:
        """Drain ``name`` so nothing is scheduled onto it while it is stopped (slurmctld
        does not notice a stopped slurmd for SlurmdTimeout); refuse while jobs run on it."""
        actions = SlurmActions(slurm.adapter(timeout=10.0))
        try:
            node = _slurm_node(slurm, name)
            ours = node is not None and "DRAIN" not in node.flags
            if ours:
                progress(f"draining Slurm node {name}")
                actions.drain(name, f"{STOP_REASON} stopped by gpuwarden")
                node = _slurm_node(slurm, name)
            if node is not None and (node.cpus_alloc > 0 or node.state in _BUSY):
                if ours:
                    actions.resume(name)
                raise ProviderError(f"node {name} still runs Slurm jobs (state {node.state}); "
                                    "it was not stopped: cancel them or stop it once they end")
        except SlurmError as exc:
            raise ProviderError(f"local Slurm cluster: {exc}") from None

    def _rejoin(self, slurm: LocalSlurmCluster, names: list[str], progress: Progress) -> None:
        """Wait until Slurm hears from each node again, resuming one drained by a stop
        (reason ``STOP_REASON``) or marked DOWN for not responding while it was stopped; a
        node drained or downed for another reason (a failed health check, an admin) stays
        so.  Slurm 22.05 keeps a restarted slurmd's node drained, and shows a resumed one
        ``idle*`` (not responding) for about a second before ``idle``."""
        actions = SlurmActions(slurm.adapter(timeout=10.0))
        deadline = self.clock.monotonic() + self.start_timeout_s
        resumed: set[str] = set()
        while True:
            try:
                nodes = {n.name: n for n in slurm.adapter(timeout=5.0).nodes().nodes}
                waiting = []
                for name in names:
                    node = nodes.get(name)
                    if node is None:
                        waiting.append(name)
                        continue
                    stopped_by_us = "DRAIN" in node.flags and node.reason.startswith(STOP_REASON)
                    lost = node.state == "down" and node.reason == "Not responding"
                    if (stopped_by_us or lost) and name not in resumed:
                        progress(f"resuming Slurm node {name}")
                        actions.resume(name)
                        resumed.add(name)
                        waiting.append(name)
                    elif "NOT_RESPONDING" in node.flags:  # its slurmd has not registered
                        waiting.append(name)
            except SlurmError as exc:
                raise ProviderError(f"local Slurm cluster: {exc}") from None
            if not waiting:
                return
            if self.clock.monotonic() > deadline:
                states = {n: nodes[n].state_raw for n in waiting if n in nodes}
                raise ProviderError(f"Slurm nodes {waiting} did not rejoin within "
                                    f"{self.start_timeout_s:.0f}s ({states}; logs in "
                                    f"{slurm.directory / 'log'})")
            self.clock.sleep(0.2)

    def _ensure_daemon(self, spec: ClusterDescription, index: int,
                       slurm: LocalSlurmCluster | None, progress: Progress) -> None:
        node_dir = self._node_dir(spec, index)
        pid = processes.read_pid(node_dir / "pid")
        if pid is not None and processes.alive(pid) and self._ours(spec, pid):
            return
        name = self.node_name(spec, index)
        token_file = Workspace(self.home, spec.name).token_file(name)
        ensure_token(token_file)
        argv = [sys.executable, "-m", "gpuwarden", "node", "--host", "127.0.0.1",
                "--port", str(self._port(spec, index)), "--gpu-backend", "sim",
                "--sim-gpus", str(spec.gpus_per_node), "--interval", "1",
                "--token-file", str(token_file), "--hostname", name,
                "--sim-fault-file", str(node_dir / SIM_FAULT_FILE)]
        if spec.gpu_type and _sim_model(spec.gpu_type):
            argv += ["--sim-model", _sim_model(spec.gpu_type) or ""]
        env = dict(os.environ)
        env.pop("GPUWARDEN_NODE_TOKEN", None)
        if slurm is not None:
            argv += ["--slurm", "--slurm-node", name, "--slurm-interval", "2"]
            if index == 1:
                argv.append("--slurm-controller")
            env.update(slurm.env())
        progress(f"starting {name}")
        processes.spawn(argv, env, self._tag(spec), node_dir / "node.log", node_dir / "pid")

    def _record(self, spec: ClusterDescription, index: int, check: bool = True) -> NodeRecord:
        node_dir = self._node_dir(spec, index)
        name = self.node_name(spec, index)
        pid = processes.read_pid(node_dir / "pid")
        running = pid is not None and processes.alive(pid) and self._ours(spec, pid)
        port_file = node_dir / "port"
        url = f"http://127.0.0.1:{port_file.read_text().strip()}" if port_file.exists() else None
        if running:
            status = RUNNING
        elif (node_dir / STOPPED_FILE).exists():
            status = STOPPED
        else:
            status = "EXITED" if pid is not None else "MISSING"
        return NodeRecord(
            name=name, index=index, role="controller" if index == 1 else "worker",
            status=status, url=url, token_file=Workspace(self.home, spec.name).token_file(name),
            gpus=spec.gpus_per_node, provider_id=str(pid) if pid else None,
            cost_per_hour=0.0 if status == STOPPED else self._node_cost(spec),
            healthy=bool(running and url and check and healthy(self.http, url)),
        )

    def _wait_healthy(self, spec: ClusterDescription, progress: Progress,
                      indices: list[int] | None = None) -> list[NodeRecord]:
        deadline = self.clock.monotonic() + self.start_timeout_s
        progress("waiting for the node daemons' /healthz")
        while True:
            records = [self._record(spec, i)
                       for i in (indices or range(1, spec.nodes + 1))]
            dead = [r for r in records if r.status != RUNNING]
            if dead:
                raise ProviderError(self._why_dead(spec, dead[0]))
            if all(r.healthy for r in records):
                return records
            if self.clock.monotonic() > deadline:
                slow = [r.name for r in records if not r.healthy]
                raise ProviderError(f"node daemons {slow} did not answer /healthz within "
                                    f"{self.start_timeout_s:.0f}s (logs in {self._dir(spec)})")
            self.clock.sleep(0.2)

    def _why_dead(self, spec: ClusterDescription, record: NodeRecord) -> str:
        """One line on a daemon that is not running: how it ended, its log's last line."""
        log = self._node_dir(spec, record.index) / "node.log"
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        pid = processes.read_pid(self._node_dir(spec, record.index) / "pid")
        if pid is None:
            how = "has no pid file"
        elif processes.alive(pid):  # running, but without this cluster's tag
            how = f"pid {pid} is not this cluster's (tag {processes.tag_of(pid)!r})"
        else:
            how = f"exited ({processes.how_it_ended(pid) or 'not our child'})"
        return (f"node daemon {record.name} {how}{': ' + tail[0] if tail else ''} "
                f"(log: {log})")


def _slurmctld_pid(slurm: LocalSlurmCluster) -> int | None:
    return processes.read_pid(slurm.run_dir / "slurmctld.pid")


def _slurm_node(slurm: LocalSlurmCluster, name: str) -> SlurmNode | None:
    return next((n for n in slurm.adapter(timeout=5.0).nodes().nodes if n.name == name), None)


def _sim_model(gpu_type: str) -> str | None:
    """The simulated model for a GPU type (``H100``, ``NVIDIA H100 80GB HBM3``...)."""
    from gpuwarden.gpu.sim import MODELS

    wanted = gpu_type.lower()
    for model in MODELS:
        if wanted == model.name.lower() or any(a in wanted for a in model.aliases):
            return model.aliases[0]
    return None


def _slurm_gpu_type(gpu_type: str | None) -> str | None:
    """A GRES type name Slurm accepts (``h100``), from the description's GPU type."""
    if not gpu_type:
        return None
    return _sim_model(gpu_type) or "".join(c for c in gpu_type.lower() if c.isalnum())[:20]
