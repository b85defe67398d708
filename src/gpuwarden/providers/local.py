"""``provider: local``: nodes are ``gpuwarden node`` processes on this machine with
simulated GPUs, joined into a real local Slurm cluster when Slurm is installed and we are
root (node 1 is the controller)."""

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
    Clock,
    DownReport,
    NodeRecord,
    Progress,
    ProviderError,
    SystemClock,
    Workspace,
)
from gpuwarden.providers.health import healthy
from gpuwarden.providers.secrets import ensure_token
from gpuwarden.providers.spec import ClusterDescription
from gpuwarden.slurm import LocalSlurmCluster, SlurmError


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
        slurm = None
        if spec.slurm and self.use_slurm():
            slurm = self._slurm(spec)
            if not slurm.status().running:
                progress("starting the local Slurm cluster")
                slurm.progress = progress
                try:
                    slurm.up()
                except (SlurmError, OSError) as exc:
                    raise ProviderError(f"local Slurm cluster: {exc}") from None
        elif spec.slurm:
            progress("Slurm is not installed or we are not root: nodes run without Slurm")
        for index in range(1, spec.nodes + 1):
            self._ensure_daemon(spec, index, slurm, progress)
        return self._wait_healthy(spec, progress)

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
                "--token-file", str(token_file), "--hostname", name]
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
        status = RUNNING if running else ("EXITED" if pid is not None else "MISSING")
        return NodeRecord(
            name=name, index=index, role="controller" if index == 1 else "worker",
            status=status, url=url, token_file=Workspace(self.home, spec.name).token_file(name),
            gpus=spec.gpus_per_node, provider_id=str(pid) if pid else None,
            cost_per_hour=self._node_cost(spec),
            healthy=bool(running and url and check and healthy(self.http, url)),
        )

    def _wait_healthy(self, spec: ClusterDescription, progress: Progress) -> list[NodeRecord]:
        deadline = self.clock.monotonic() + self.start_timeout_s
        progress("waiting for the node daemons' /healthz")
        while True:
            records = self.observe(spec)
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
