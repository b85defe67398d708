"""Render slurm.conf, gres.conf and cgroup.conf from a small cluster description.

One generator serves the local launcher (several ``slurmd -N`` on one host, fake GPU
devices, no systemd/cgroups; slurmdbd on a private MariaDB when installed) and real nodes
(cgroup plugins, real ``/dev/nvidiaN``). ``slurmdbd.conf`` holds the database password, so
it is rendered apart (:func:`render_slurmdbd_conf`) and written owner-only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gpuwarden.slurm.errors import ValidationError
from gpuwarden.yamlfile import YamlFileError, read_yaml

Mode = Literal["local", "real"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class NodeSpec:
    """One compute node (a ``NodeName=`` line)."""

    name: str
    addr: str = "127.0.0.1"
    hostname: str | None = None
    port: int = 6818
    cpus: int = 1
    memory_mb: int = 1024
    gpus: int = 0
    gpu_type: str | None = None
    gpu_files: tuple[str, ...] = ()

    def device_files(self) -> tuple[str, ...]:
        """The GPU device files for gres.conf (``/dev/nvidiaN`` unless given)."""
        if self.gpu_files:
            return self.gpu_files
        return tuple(f"/dev/nvidia{i}" for i in range(self.gpus))


@dataclass(frozen=True)
class PartitionSpec:
    """One ``PartitionName=`` line; ``nodes`` empty means every node."""

    name: str
    nodes: tuple[str, ...] = ()
    default: bool = False
    max_time: str = "INFINITE"


@dataclass(frozen=True)
class AccountingSpec:
    """Where slurmctld finds slurmdbd (``AccountingStorageHost``/``Port``), and for the
    ``slurmdbd.conf`` of a private slurmdbd: its paths and its MariaDB."""

    host: str
    port: int = 6819
    addr: str = "127.0.0.1"
    pid_file: str = "/run/slurm/slurmdbd.pid"
    log_file: str = "/var/log/slurm/slurmdbd.log"
    storage_host: str = "127.0.0.1"
    storage_port: int = 3306
    storage_user: str = "slurm"
    storage_pass: str = field(default="", repr=False)
    storage_loc: str = "slurm_acct_db"


@dataclass(frozen=True)
class ClusterSpec:
    """What a Slurm cluster looks like: enough to write its configuration files."""

    name: str
    controller_host: str
    nodes: tuple[NodeSpec, ...]
    controller_addr: str | None = None
    controller_port: int = 6817
    partitions: tuple[PartitionSpec, ...] = ()
    mode: Mode = "real"
    munge_socket: str | None = None
    state_dir: str = "/var/spool/slurmctld"
    spool_dir: str = "/var/spool/slurmd"
    log_dir: str = "/var/log/slurm"
    pid_dir: str = "/run/slurm"
    slurm_user: str = "root"
    max_job_count: int = 10000
    max_array_size: int = 1001
    slurmd_timeout: int = 300
    accounting: AccountingSpec | None = None
    """slurmdbd to record jobs in (``sacct``); None: no accounting."""
    extra: Mapping[str, str] = field(default_factory=dict)

    def effective_partitions(self) -> tuple[PartitionSpec, ...]:
        if self.partitions:
            return self.partitions
        return (PartitionSpec(name="gpu", default=True),)

    def validate(self) -> None:
        """Raise :class:`ValidationError` naming the first bad field."""
        if not _NAME_RE.match(self.name):
            raise ValidationError("name", f"{self.name!r} is not a valid cluster name",
                                  "use letters, digits, '-' or '_' starting with a letter")
        if not _HOST_RE.match(self.controller_host):
            raise ValidationError("controller_host", f"{self.controller_host!r} is not a host name",
                                  "give the controller's short host name")
        if not self.nodes:
            raise ValidationError("nodes", "the cluster has no nodes", "list at least one node")
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            where = f"nodes[{i}]"
            if not _NAME_RE.match(node.name):
                raise ValidationError(f"{where}.name", f"{node.name!r} is not a valid node name",
                                      "use letters, digits, '-' or '_' starting with a letter")
            if node.name in seen:
                raise ValidationError(f"{where}.name", f"node {node.name!r} appears twice",
                                      "give every node a unique name")
            seen.add(node.name)
            for key in ("cpus", "memory_mb", "port"):
                if getattr(node, key) < 1:
                    raise ValidationError(f"{where}.{key}", "must be a positive integer",
                                          f"set {key} to 1 or more")
            if node.gpus < 0:
                raise ValidationError(f"{where}.gpus", "must be 0 or more", "set gpus >= 0")
            if node.gpu_files and len(node.gpu_files) != node.gpus:
                raise ValidationError(f"{where}.gpu_files",
                                      f"{len(node.gpu_files)} files for {node.gpus} GPUs",
                                      "list exactly one device file per GPU")
            if node.gpu_type is not None and not _NAME_RE.match(node.gpu_type):
                raise ValidationError(f"{where}.gpu_type", f"{node.gpu_type!r} is not valid",
                                      "use a short type such as a100 or h100")
        for i, part in enumerate(self.effective_partitions()):
            if not _NAME_RE.match(part.name):
                raise ValidationError(f"partitions[{i}].name", f"{part.name!r} is not valid",
                                      "use letters, digits, '-' or '_' starting with a letter")
            unknown = [n for n in part.nodes if n not in seen]
            if unknown:
                raise ValidationError(f"partitions[{i}].nodes", f"unknown nodes {unknown}",
                                      "list only nodes defined under nodes")
        if self.max_job_count < 1:
            raise ValidationError("max_job_count", "must be positive", "set it to 10000 or more")


@dataclass(frozen=True)
class RenderedConfig:
    """The configuration files, by file name."""

    slurm_conf: str
    gres_conf: str
    cgroup_conf: str | None

    def files(self) -> dict[str, str]:
        out = {"slurm.conf": self.slurm_conf, "gres.conf": self.gres_conf}
        if self.cgroup_conf is not None:
            out["cgroup.conf"] = self.cgroup_conf
        return out

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.files().items():
            path = directory / name
            path.write_text(text)
            written.append(path)
        return written


_LOCAL_PLUGINS = {
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "JobAcctGatherType": "jobacct_gather/none",
}
_REAL_PLUGINS = {
    "ProctrackType": "proctrack/cgroup",
    "TaskPlugin": "task/cgroup,task/affinity",
    "JobAcctGatherType": "jobacct_gather/cgroup",
}


def render_config(spec: ClusterSpec) -> RenderedConfig:
    """Render the configuration files for ``spec`` (validated first)."""
    spec.validate()
    return RenderedConfig(
        slurm_conf=_render_slurm_conf(spec),
        gres_conf=_render_gres_conf(spec),
        cgroup_conf=_render_cgroup_conf() if spec.mode == "real" else None,
    )


def _render_slurm_conf(spec: ClusterSpec) -> str:
    ctl = spec.controller_host
    if spec.controller_addr:
        ctl = f"{ctl}({spec.controller_addr})"
    settings: dict[str, str] = {
        "ClusterName": spec.name,
        "SlurmctldHost": ctl,
        "SlurmctldPort": str(spec.controller_port),
        "SlurmUser": spec.slurm_user,
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
    }
    if spec.munge_socket:
        settings["AuthInfo"] = f"socket={spec.munge_socket}"
    settings.update({
        "StateSaveLocation": spec.state_dir,
        "SlurmdSpoolDir": f"{spec.spool_dir}/%n",
        "SlurmctldPidFile": f"{spec.pid_dir}/slurmctld.pid",
        "SlurmdPidFile": f"{spec.pid_dir}/slurmd.%n.pid",
        "SlurmctldLogFile": f"{spec.log_dir}/slurmctld.log",
        "SlurmdLogFile": f"{spec.log_dir}/slurmd.%n.log",
        "SchedulerType": "sched/backfill",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "GresTypes": "gpu",
        "AccountingStorageType": "accounting_storage/none",
    })
    if spec.accounting is not None:
        # AccountingStorageTRES=gres/gpu is fatal without slurmdbd: only here.
        settings.update({
            "AccountingStorageType": "accounting_storage/slurmdbd",
            "AccountingStorageHost": spec.accounting.addr or spec.accounting.host,
            "AccountingStoragePort": str(spec.accounting.port),
            "AccountingStorageTRES": "gres/gpu",
        })
        if spec.munge_socket:
            # Clients reach slurmdbd through AccountingStoragePass's munge socket, not
            # AuthInfo's (without it: "Munge encode failed: /run/munge/munge.socket.2").
            settings["AccountingStoragePass"] = f"socket={spec.munge_socket}"
    settings.update({
        "MpiDefault": "none",
        "ReturnToService": "2",
        "MaxJobCount": str(spec.max_job_count),
        "MaxArraySize": str(spec.max_array_size),
        "SlurmdTimeout": str(spec.slurmd_timeout),
    })
    settings.update(_LOCAL_PLUGINS if spec.mode == "local" else _REAL_PLUGINS)
    if spec.accounting is not None and spec.mode == "local":
        # reads /proc (no cgroups needed), so sacct has CPU time and memory of each step
        settings["JobAcctGatherType"] = "jobacct_gather/linux"
    settings.update(spec.extra)
    lines = [f"# Generated by gpuwarden for cluster {spec.name} ({spec.mode} mode)."]
    lines += [f"{k}={v}" for k, v in settings.items()]
    lines.append("")
    for node in spec.nodes:
        lines.append(_node_line(node))
    lines.append("")
    all_nodes = [n.name for n in spec.nodes]
    for part in spec.effective_partitions():
        members = ",".join(part.nodes or all_nodes)
        lines.append(f"PartitionName={part.name} Nodes={members} "
                     f"Default={'YES' if part.default else 'NO'} MaxTime={part.max_time} State=UP")
    return "\n".join(lines) + "\n"


def render_slurmdbd_conf(spec: ClusterSpec) -> str:
    """``slurmdbd.conf`` for ``spec.accounting`` (it carries the database password: write
    it mode 0600, owned by SlurmUser, or slurmdbd refuses it)."""
    acct = spec.accounting
    if acct is None:
        raise ValidationError("accounting", "the cluster has no accounting",
                              "give an AccountingSpec to render slurmdbd.conf")
    lines = [f"# Generated by gpuwarden for cluster {spec.name}.",
             "AuthType=auth/munge"]
    if spec.munge_socket:
        lines.append(f"AuthInfo=socket={spec.munge_socket}")
    lines += [
        f"DbdHost={acct.host}",
        f"DbdAddr={acct.addr}",
        f"DbdPort={acct.port}",
        f"SlurmUser={spec.slurm_user}",
        f"PidFile={acct.pid_file}",
        f"LogFile={acct.log_file}",
        "StorageType=accounting_storage/mysql",
        f"StorageHost={acct.storage_host}",
        f"StoragePort={acct.storage_port}",
        f"StorageUser={acct.storage_user}",
        f"StoragePass={acct.storage_pass}",
        f"StorageLoc={acct.storage_loc}",
    ]
    return "\n".join(lines) + "\n"


def _node_line(node: NodeSpec) -> str:
    parts = [f"NodeName={node.name}", f"NodeAddr={node.addr}"]
    if node.hostname:
        parts.append(f"NodeHostname={node.hostname}")
    parts += [f"Port={node.port}", f"CPUs={node.cpus}", f"RealMemory={node.memory_mb}"]
    if node.gpus:
        gres = f"gpu:{node.gpu_type}:{node.gpus}" if node.gpu_type else f"gpu:{node.gpus}"
        parts.append(f"Gres={gres}")
    parts.append("State=UNKNOWN")
    return " ".join(parts)


def _render_gres_conf(spec: ClusterSpec) -> str:
    lines = [f"# Generated by gpuwarden for cluster {spec.name}."]
    for node in spec.nodes:
        type_part = f" Type={node.gpu_type}" if node.gpu_type else ""
        for path in node.device_files():
            lines.append(f"NodeName={node.name} Name=gpu{type_part} File={path}")
    return "\n".join(lines) + "\n"


def _render_cgroup_conf() -> str:
    return (
        "# Generated by gpuwarden.\n"
        "CgroupPlugin=autodetect\n"
        "ConstrainCores=yes\n"
        "ConstrainDevices=yes\n"
        "ConstrainRAMSpace=yes\n"
    )


# ---- loading a description -------------------------------------------------------------

_NODE_KEYS = {f for f in NodeSpec.__dataclass_fields__}
_PART_KEYS = {f for f in PartitionSpec.__dataclass_fields__}
_CLUSTER_KEYS = {f for f in ClusterSpec.__dataclass_fields__}


def cluster_from_dict(data: Mapping[str, Any]) -> ClusterSpec:
    """Build a :class:`ClusterSpec` from a mapping (as loaded from YAML)."""
    if not isinstance(data, Mapping):
        raise ValidationError("cluster", "the description is not a mapping",
                              "write the cluster as YAML keys: name, controller_host, nodes")
    unknown = set(data) - _CLUSTER_KEYS
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown key",
                              f"use only: {', '.join(sorted(_CLUSTER_KEYS))}")
    for key in ("name", "controller_host", "nodes"):
        if key not in data:
            raise ValidationError(key, "missing", f"add {key}: to the cluster description")
    raw_nodes = data["nodes"]
    if not isinstance(raw_nodes, list):
        raise ValidationError("nodes", "must be a list", "list the nodes under nodes:")
    nodes = tuple(_node_from_dict(i, n) for i, n in enumerate(raw_nodes))
    parts = tuple(_part_from_dict(i, p) for i, p in enumerate(data.get("partitions") or []))
    kwargs = {k: v for k, v in data.items() if k not in ("nodes", "partitions")}
    if isinstance(kwargs.get("accounting"), Mapping):
        acct = dict(kwargs["accounting"])
        unknown_acct = set(acct) - set(AccountingSpec.__dataclass_fields__)
        if unknown_acct or "host" not in acct:
            raise ValidationError(f"accounting.{sorted(unknown_acct or {'host'})[0]}",
                                  "unknown key" if unknown_acct else "missing",
                                  "give host (slurmdbd's host) and optionally port")
        kwargs["accounting"] = AccountingSpec(**acct)
    try:
        spec = ClusterSpec(nodes=nodes, partitions=parts, **kwargs)
    except TypeError as exc:
        raise ValidationError("cluster", str(exc), "check the key types") from exc
    spec.validate()
    return spec


def _node_from_dict(index: int, raw: Any) -> NodeSpec:
    where = f"nodes[{index}]"
    if not isinstance(raw, Mapping):
        raise ValidationError(where, "must be a mapping", "give name, cpus, gpus... per node")
    unknown = set(raw) - _NODE_KEYS
    if unknown:
        raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown key",
                              f"use only: {', '.join(sorted(_NODE_KEYS))}")
    if "name" not in raw:
        raise ValidationError(f"{where}.name", "missing", "give every node a name")
    values = dict(raw)
    if "gpu_files" in values:
        values["gpu_files"] = tuple(values["gpu_files"] or ())
    return NodeSpec(**values)


def _part_from_dict(index: int, raw: Any) -> PartitionSpec:
    where = f"partitions[{index}]"
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ValidationError(where, "must be a mapping with a name", "give name: and nodes:")
    unknown = set(raw) - _PART_KEYS
    if unknown:
        raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown key",
                              f"use only: {', '.join(sorted(_PART_KEYS))}")
    values = dict(raw)
    if "nodes" in values:
        values["nodes"] = tuple(values["nodes"] or ())
    return PartitionSpec(**values)


def load_cluster(path: Path) -> ClusterSpec:
    """Load a cluster description from a YAML file."""
    try:
        data = read_yaml(path)
    except YamlFileError as exc:
        raise ValidationError("--cluster", f"{path}: {exc.problem}", exc.fix) from None
    return cluster_from_dict(data)


def with_local_paths(spec: ClusterSpec, root: Path) -> ClusterSpec:
    """``spec`` with every state/log/pid/spool path under ``root`` (local clusters)."""
    return replace(
        spec,
        state_dir=str(root / "state"),
        spool_dir=str(root / "spool"),
        log_dir=str(root / "log"),
        pid_dir=str(root / "run"),
    )
