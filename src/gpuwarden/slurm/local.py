"""A real multi-node Slurm cluster on this machine, kept entirely under one directory.

A private munged (own key, socket, pid, log and seed files), one slurmctld and one
``slurmd -N nodeX`` per node on its own port, fake GPU character devices (``mknod c 195 N``)
and a private ``SLURM_CONF``: nothing is written to /etc and ``down()`` leaves no process.

With MariaDB and slurmdbd installed (Debian's ``mariadb-server`` and ``slurmdbd``) the
cluster also keeps accounting, so ``sacct`` knows every finished job: a private mariadbd
(own datadir, socket and loopback port; a fresh database per ``up()``, ~1 s to create) and
a slurmdbd on its own port, with the cluster, one account and the users registered through
``sacctmgr``. Every daemon carries ``GPUWARDEN_SLURM_LOCAL=<directory>`` in its environment,
which is how ``down()`` (and the demo's last sweep) finds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpuwarden import processes
from gpuwarden.slurm.adapter import SlurmAdapter
from gpuwarden.slurm.config import (
    AccountingSpec,
    ClusterSpec,
    NodeSpec,
    PartitionSpec,
    render_config,
    render_slurmdbd_conf,
    with_local_paths,
)
from gpuwarden.slurm.errors import LocalClusterError, SlurmError
from gpuwarden.slurm.model import SlurmNode

INSTALL_HINT = "apt-get install -y slurm-wlm munge"
ACCOUNTING_HINT = "apt-get install -y mariadb-server slurmdbd"
REQUIRED_BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "scontrol", "sbatch")
ACCOUNTING_BINARIES = ("mariadb-install-db", "mariadbd", "slurmdbd", "sacctmgr", "sacct")
DEFAULT_ACCOUNT = "gpuwarden"
# root, and the demo's workload users (it submits as them with sbatch --uid)
ACCOUNTING_USERS = ("root", "alice", "bob", "carol")
NVIDIA_MAJOR = 195
# "limits" implies "associations" (a job needs a registered user/account); "qos" checks
# the job's QOS exists and is allowed. The users above are registered, so their jobs run.
ENFORCE = {"AccountingStorageEnforce": "associations,limits,qos"}
# memory_enforcement: task/cgroup confines each job to its --mem (memory is a consumable
# resource, DefMemPerCPU for jobs that give none), so one over it ends OUT_OF_MEMORY
MEMORY_CGROUP = Path("/sys/fs/cgroup")
CGROUP_CONF = ("CgroupAutomount=yes\nConstrainRAMSpace=yes\nConstrainSwapSpace=yes\n"
               "AllowedSwapSpace=0\n")


@dataclass(frozen=True)
class ProcessInfo:
    """One daemon of the local cluster."""

    name: str
    pid: int | None
    alive: bool


@dataclass(frozen=True)
class LocalClusterStatus:
    """What ``status()`` found."""

    directory: Path
    configured: bool
    processes: tuple[ProcessInfo, ...]
    nodes: tuple[SlurmNode, ...] = ()
    error: str | None = None

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.alive for p in self.processes)


@dataclass
class LocalSlurmCluster:
    """A local Slurm cluster: ``up()``, ``status()``, ``down()``, ``env()``."""

    directory: Path
    nodes: int = 3
    gpus_per_node: int = 2
    node_prefix: str = "node"  # node names: node1, node2, ...
    cpus_per_node: int = 2
    memory_mb: int = 1024
    gpu_type: str | None = None
    cluster_name: str = "gpuwarden"
    slurmd_timeout: int = 300
    max_job_count: int = 10000
    max_array_size: int = 1001
    base_port: int | None = None
    extra_conf: Mapping[str, str] = field(default_factory=dict)
    partitions: tuple[PartitionSpec, ...] = ()
    """The cluster's partitions; none: one default partition ``gpu`` of every node."""
    accounting: bool | None = None
    """slurmdbd on a private MariaDB: None (default) when both are installed, True to
    require them, False for none (finished jobs then come from squeue alone)."""
    accounting_users: tuple[str, ...] = ACCOUNTING_USERS
    memory_enforcement: bool = False
    """Confine jobs to their memory with cgroups (task/cgroup, CR_Core_Memory), as real
    nodes do, so an over-limit job ends OUT_OF_MEMORY; needs a writable memory cgroup
    controller. Off by default: then memory is not scheduled and nothing is confined."""
    account: str = DEFAULT_ACCOUNT
    start_timeout_s: float = 60.0
    progress: Callable[[str], None] | None = None
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False,
                                                      repr=False)
    _log_start: dict[Path, int] = field(default_factory=dict, init=False, repr=False)
    """Each daemon log's size when its daemon was last started: what follows is this start."""

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).absolute()

    # ---- paths ------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.directory / "etc" / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        return self.directory / "munge"

    @property
    def socket_dir(self) -> Path:
        """Where the Unix sockets live (munged's, and slurmd's spool with its step sockets).
        A socket path holds at most 107 bytes, so a deep directory gets a short stand-in
        under the temp directory, removed by ``down()``; so does one that other users
        cannot reach (under a 0700 home): jobs of other users read their script from the
        spool."""
        if len(str(self.directory)) <= 48 and _reachable(self.directory):
            return self.directory
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"gpuwarden-slurm-{digest}"

    @property
    def munge_socket(self) -> Path:
        if self.socket_dir == self.directory:
            return self.munge_dir / "munge.socket"
        return self.socket_dir / "munge.socket"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def db_dir(self) -> Path:
        return self.directory / "db"

    @property
    def db_socket(self) -> Path:
        if self.socket_dir == self.directory:
            return self.db_dir / "mariadbd.sock"
        return self.socket_dir / "mariadbd.sock"

    @property
    def dbd_conf_path(self) -> Path:
        return self.conf_path.parent / "slurmdbd.conf"

    @property
    def has_accounting(self) -> bool:
        """The written configuration keeps accounting (slurmdbd + MariaDB)."""
        return self.dbd_conf_path.exists()

    def accounting_wanted(self) -> bool:
        """Whether ``up()`` sets up accounting (raises when required but not installed)."""
        missing = [b for b in ACCOUNTING_BINARIES if _which(b) is None]
        if self.accounting is None:
            return not missing
        if self.accounting and missing:
            raise LocalClusterError(f"accounting needs {', '.join(missing)}; install with "
                                    f"`{ACCOUNTING_HINT}`")
        return self.accounting

    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}{i}" for i in range(1, self.nodes + 1)]

    def env(self) -> dict[str, str]:
        """Environment additions every Slurm client command of this cluster needs."""
        return {"SLURM_CONF": str(self.conf_path)}

    def adapter(self, timeout: float = 10.0) -> SlurmAdapter:
        return SlurmAdapter(env=self.env(), timeout=timeout)

    # ---- lifecycle ----------------------------------------------------------------------
    def up(self) -> LocalClusterStatus:
        """Start munged, slurmctld and the slurmds; return once every node is idle."""
        check_prerequisites()
        if self.nodes < 1 or self.gpus_per_node < 0:
            raise LocalClusterError("nodes must be >= 1 and gpus_per_node >= 0")
        if self._any_alive():
            self.down()
        accounting = self.accounting_wanted()
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._start(accounting)
                break
            except _PortTaken as exc:
                # the ports were free when chosen; something bound one before our daemon
                # did: start over on new ones (down() ran)
                if self.base_port is not None:  # the ports are the user's: no others
                    raise LocalClusterError(f"{exc}: pick another base_port than "
                                            f"{self.base_port}") from None
                if attempt == _PORT_ATTEMPTS:
                    raise LocalClusterError(f"{exc} ({_PORT_ATTEMPTS} tries on different "
                                            "ports)") from None
                self._note(f"{exc}; starting again on other ports")
        return self.status()

    def _start(self, accounting: bool) -> None:
        self._note("writing configuration")
        self._prepare_dirs()
        ports = self._pick_ports(accounting)
        spec = self.spec(ports, accounting=accounting)
        render_config(spec).write(self.conf_path.parent)
        cgroup_conf = self.conf_path.parent / "cgroup.conf"
        cgroup_conf.unlink(missing_ok=True)
        if self.memory_enforcement:
            why = memory_cgroup_unavailable()
            if why is not None:
                raise LocalClusterError(f"memory_enforcement: {why}; start the cluster "
                                        "without it (memory is then not confined)")
            cgroup_conf.write_text(CGROUP_CONF)
        self.dbd_conf_path.unlink(missing_ok=True)
        if spec.accounting is not None:
            fd = os.open(self.dbd_conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(render_slurmdbd_conf(spec))
        self._make_devices(spec)
        env = self._daemon_env()
        try:
            self._note("starting munged")
            self._start_munged(env)
            if spec.accounting is not None:
                self._start_accounting(env, spec.accounting)
            self._note("starting slurmctld")
            self._spawn(["slurmctld", "-c"], env, self.run_dir / "slurmctld.pid",
                        self._log("slurmctld"))
            self._wait_controller()
            for name in self.node_names():
                self._note(f"starting slurmd {name}")
                self._spawn(["slurmd", "-N", name], env, self.run_dir / f"slurmd.{name}.pid",
                            self._log(f"slurmd.{name}"))
            self._note("waiting for all nodes to be idle")
            self._wait_idle()
        except BaseException:
            self.down()
            raise

    def spec(self, ports: list[int], *, accounting: bool = False) -> ClusterSpec:
        """The cluster's description; ``ports``: slurmctld's, one per node, then (with
        accounting) slurmdbd's and MariaDB's."""
        host = socket.gethostname().split(".")[0]
        devices = self.directory / "dev"
        nodes = tuple(
            NodeSpec(
                name=name,
                addr="127.0.0.1",
                hostname=host,
                port=ports[i + 1],
                cpus=self.cpus_per_node,
                memory_mb=self.memory_mb,
                gpus=self.gpus_per_node,
                gpu_type=self.gpu_type,
                gpu_files=tuple(str(devices / name / f"nvidia{g}")
                                for g in range(self.gpus_per_node)),
            )
            for i, name in enumerate(self.node_names())
        )
        spec = ClusterSpec(
            name=self.cluster_name,
            controller_host=host,
            controller_addr="127.0.0.1",
            controller_port=ports[0],
            nodes=nodes,
            partitions=self.partitions,
            mode="local",
            munge_socket=str(self.munge_socket),
            max_job_count=self.max_job_count,
            max_array_size=self.max_array_size,
            slurmd_timeout=self.slurmd_timeout,
            accounting=self._accounting_spec(host, ports) if accounting else None,
            # with accounting, limits set with sacctmgr (QOS and association TRES, job
            # counts) hold as on a site's cluster: a job over one pends with its reason
            extra={**(ENFORCE if accounting else {}), **self._memory_conf(),
                   **self.extra_conf},
        )
        return replace(with_local_paths(spec, self.directory),
                       spool_dir=str(self.socket_dir / "spool"))

    def _memory_conf(self) -> dict[str, str]:
        if not self.memory_enforcement:
            return {}
        return {"TaskPlugin": "task/cgroup", "ProctrackType": "proctrack/cgroup",
                "JobAcctGatherType": "jobacct_gather/cgroup",
                "SelectTypeParameters": "CR_Core_Memory",
                "DefMemPerCPU": str(max(1, self.memory_mb // max(self.cpus_per_node, 1)))}

    def _accounting_spec(self, host: str, ports: list[int]) -> AccountingSpec:
        if len(ports) < self.nodes + 3:
            raise LocalClusterError("accounting needs two more ports (slurmdbd, MariaDB)")
        return AccountingSpec(
            host=host, addr="127.0.0.1", port=ports[self.nodes + 1],
            pid_file=str(self.run_dir / "slurmdbd.pid"),
            log_file=str(self.directory / "log" / "slurmdbd.log"),
            storage_host="127.0.0.1", storage_port=ports[self.nodes + 2],
            storage_user="slurm", storage_pass=secrets.token_hex(16))

    def start_node(self, name: str) -> int:
        """(Re)start the slurmd of node ``name``; returns its pid."""
        if name not in self.node_names_on_disk():
            raise LocalClusterError(f"no node {name!r} in {self.conf_path}")
        pid = self._read_pid(f"slurmd.{name}")
        if pid is not None and processes.alive(pid):
            return pid
        return self._spawn(["slurmd", "-N", name], self._daemon_env(),
                           self.run_dir / f"slurmd.{name}.pid", self._log(f"slurmd.{name}"))

    def stop_node(self, name: str, timeout_s: float = 10.0) -> bool:
        """Stop the slurmd of node ``name`` cleanly (SIGTERM, SIGKILL after ``timeout_s``);
        False when it was not running.  slurmctld is not told: it keeps the node's state
        (drain it first, or jobs are scheduled onto it) until SlurmdTimeout, then marks it
        DOWN "Not responding"; :meth:`start_node` brings it back."""
        if name not in self.node_names_on_disk():
            raise LocalClusterError(f"no node {name!r} in {self.conf_path}")
        pid = self._read_pid(f"slurmd.{name}")
        if pid is None or not processes.alive(pid) or not self._is_ours(pid):
            return False
        processes.terminate(pid, timeout_s)
        return True

    def kill_node(self, name: str) -> None:
        """SIGKILL the slurmd of node ``name`` (simulates a crashed node)."""
        pid = self._read_pid(f"slurmd.{name}")
        if pid is None or not processes.alive(pid) or not self._is_ours(pid):
            raise LocalClusterError(f"slurmd of {name} is not running")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and processes.alive(pid):
            time.sleep(0.05)

    def wait_nodes(self, state: str = "idle", timeout_s: float | None = None) -> None:
        """Wait until every node is in ``state``."""
        self._wait_idle(state, timeout_s)

    def status(self) -> LocalClusterStatus:
        """The daemons' liveness and, when slurmctld answers, the nodes."""
        procs = tuple(
            ProcessInfo(name, pid, pid is not None and processes.alive(pid))
            for name, pid in self._pid_files()
        )
        if not self.conf_path.exists():
            return LocalClusterStatus(self.directory, False, procs, error="not configured")
        nodes: tuple[SlurmNode, ...] = ()
        error = None
        if not processes.alive(self._read_pid("slurmctld")):
            return LocalClusterStatus(self.directory, True, procs, error="slurmctld is not running")
        try:
            nodes = tuple(self.adapter(timeout=5.0).nodes().nodes)
        except SlurmError as exc:
            error = str(exc)
        return LocalClusterStatus(self.directory, True, procs, nodes, error)

    def down(self, timeout_s: float = 15.0) -> list[str]:
        """Stop everything this cluster started; return what was stopped. Verifies that no
        process carrying this cluster's ``SLURM_CONF`` is left."""
        stopped: list[str] = []
        if self.conf_path.exists() and processes.alive(self._read_pid("slurmctld")):
            # every user's jobs (the demo's run as several users), not only root's; one
            # state per call (scancel takes one), pending first so none starts meanwhile
            for state in ("PENDING", "SUSPENDED", "RUNNING"):
                with contextlib.suppress(SlurmError):
                    self.adapter(timeout=5.0).run("scancel", ["--full", f"--state={state}"])
        # slurmds first (they own the job steps), then the controller, then accounting
        # (slurmdbd, then its database), then munged; the slurmds together, so a stop takes
        # one slurmd's time, not the sum.
        slurmds = [n for n, _ in self._pid_files() if n.startswith("slurmd.")]
        for group in (slurmds, ["slurmctld"], ["slurmdbd"], ["mariadbd"], ["munged"]):
            pids = {}
            for name in group:
                pid = self._read_pid(name)
                if pid is not None and processes.alive(pid) and self._is_ours(pid):
                    pids[name] = pid
            processes.terminate_all(list(pids.values()), timeout_s)
            stopped += list(pids)
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=timeout_s)
        self._children = [c for c in self._children if c.returncode is None]
        leftovers = self.leftover_pids()
        processes.terminate_all(leftovers, 3.0)
        stopped += [f"pid {pid}" for pid in leftovers]
        left = [p for p in self.leftover_pids() if processes.alive(p)]
        if left:
            raise LocalClusterError(f"processes still running after down: {left}")
        if self.socket_dir != self.directory:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        return stopped

    # ---- helpers ----------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def _daemon_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env())
        env["GPUWARDEN_SLURM_LOCAL"] = str(self.directory)
        return env

    def _prepare_dirs(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # slurmctld starts clean (-c): old job state would only slow its start (it purges
        # the files of every defunct job one by one).
        for stale in (self.directory / "state", self.socket_dir / "spool"):
            shutil.rmtree(stale, ignore_errors=True)
        for sub in ("etc", "state", "log", "run", "db"):
            (self.directory / sub).mkdir(exist_ok=True)
        self.socket_dir.mkdir(mode=0o711, exist_ok=True)
        (self.socket_dir / "spool").mkdir(exist_ok=True)
        # munged checks that every directory above its socket is searchable by everyone.
        self.munge_dir.mkdir(exist_ok=True)
        os.chmod(self.munge_dir, 0o711)
        for stale in self.run_dir.glob("*.pid"):
            stale.unlink()

    def _pick_ports(self, accounting: bool = False) -> list[int]:
        count = self.nodes + 1 + (2 if accounting else 0)
        if self.base_port is not None:
            return list(range(self.base_port, self.base_port + count))
        # slurmctld and slurmd listen on every address: a port free on 127.0.0.1 only
        # (another cluster's slurmd on 0.0.0.0...) would not do
        return processes.free_ports(count, "")

    def _make_devices(self, spec: ClusterSpec) -> None:
        minor = 0
        for node in spec.nodes:
            for path_str in node.device_files():
                path = Path(path_str)
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists() and not stat.S_ISCHR(path.stat().st_mode):
                    path.unlink()
                if not path.exists():
                    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, minor))
                minor += 1

    def _start_munged(self, env: dict[str, str]) -> None:
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        pid_file = self.munge_dir / "munged.pid"
        argv = [
            "munged", "--force",
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={pid_file}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ]
        self._spawn(argv, env, pid_file, self.munge_dir / "munged.log")

    def _start_accounting(self, env: dict[str, str], acct: AccountingSpec) -> None:
        """A fresh private MariaDB, slurmdbd on it, and the cluster, account and users
        registered (slurmctld -c starts from job id 1, so old records would only clash)."""
        self._note("starting MariaDB")
        data = self.db_dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        log = self.directory / "log" / "mariadbd.log"
        tmp = self.db_dir / "tmp"  # its temporary tables: not in a /tmp others may clean
        tmp.mkdir(parents=True, exist_ok=True)
        small = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M", f"--tmpdir={tmp}"]
        self._run_checked(["mariadb-install-db", "--no-defaults", f"--datadir={data}",
                           "--user=root", "--auth-root-authentication-method=socket",
                           "--skip-test-db", "--skip-name-resolve", *small], env, log)
        init = self.db_dir / "init.sql"
        fd = os.open(init, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"CREATE USER IF NOT EXISTS '{acct.storage_user}'@'127.0.0.1' "
                    f"IDENTIFIED BY '{acct.storage_pass}';\n"
                    f"GRANT ALL ON {acct.storage_loc}.* TO "
                    f"'{acct.storage_user}'@'127.0.0.1';\n")
        pid_file = self.run_dir / "mariadbd.pid"
        argv = ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
                f"--socket={self.db_socket}", f"--port={acct.storage_port}",
                "--bind-address=127.0.0.1", f"--pid-file={pid_file}", f"--log-error={log}",
                f"--init-file={init}", "--skip-name-resolve", "--skip-log-bin",
                # a test and demo database: durability traded for start and write speed
                "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                "--innodb-flush-method=nosync", "--innodb-fast-shutdown=2", *small]
        offset = _log_size(log)
        with open(log, "ab") as out:  # mariadbd does not daemonize: our child, reaped by down()
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self._children.append(proc)
        deadline = time.monotonic() + self.start_timeout_s
        while not _port_open("127.0.0.1", acct.storage_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                _raise_if_port_taken("mariadbd", _log_since(log, offset))
                raise LocalClusterError(f"mariadbd did not start: {_last_line(log)} "
                                        f"(see {log})")
            time.sleep(0.05)
        self._note("starting slurmdbd")
        self._spawn(["slurmdbd"], env, Path(acct.pid_file), Path(acct.log_file))
        self._note("registering the cluster, account and users")
        # one `sacctmgr load` (each sacctmgr call costs ~0.6 s here): the cluster, one
        # account under root, and the users with it as their default account
        flat = self.db_dir / "associations.cfg"
        lines = [f"Cluster - '{self.cluster_name}'", "Parent - 'root'",
                 f"Account - '{self.account}':Description='gpuwarden':Organization='gpuwarden'",
                 f"Parent - '{self.account}'"]
        lines += [f"User - '{u}':DefaultAccount='{self.account}'" for u in self.accounting_users]
        flat.write_text("\n".join(lines) + "\n")
        adapter = self.adapter(timeout=20.0)
        deadline = time.monotonic() + self.start_timeout_s
        while True:  # slurmdbd creates its tables first: retry until it answers
            try:
                adapter.run("sacctmgr", ["-i", "load", f"file={flat}"])
                return
            except SlurmError as exc:
                if time.monotonic() > deadline or not processes.alive(self._read_pid("slurmdbd")):
                    self._check_port_taken("slurmdbd", Path(acct.log_file))
                    raise LocalClusterError(f"slurmdbd did not answer: {exc} (see "
                                            f"{acct.log_file})") from exc
            time.sleep(0.1)

    def _run_checked(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "ab") as out:
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=60, check=False,
                                  start_new_session=True)
        if proc.returncode != 0:
            raise LocalClusterError(f"{argv[0]} failed ({proc.returncode}): {_last_line(log)} "
                                    f"(see {log})")

    def _spawn(self, argv: list[str], env: dict[str, str], pid_file: Path,
               log: Path) -> int:
        """Run a self-daemonizing daemon and wait for its pid file; a daemon that logs a
        fatal error meanwhile fails at once with that line (``_PortTaken`` when its port
        was taken)."""
        offset = self._log_start[log] = _log_size(log)
        # Its own session from the first instruction: a Ctrl-C meant for whoever started the
        # cluster (sent to the terminal's whole process group) must not reach a daemon
        # that has not detached yet; stopping is down()'s job.
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                              check=False, stdin=subprocess.DEVNULL, start_new_session=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            _raise_if_port_taken(argv[0], "\n".join(detail))
            raise LocalClusterError(f"{argv[0]} failed to start: "
                                    f"{detail[-1] if detail else proc.returncode}"
                                    f" (logs in {self.directory / 'log'})")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pid = processes.read_pid(pid_file)
            if pid is not None and processes.alive(pid):
                return pid
            fatal = _fatal_line(log, offset)
            if fatal is not None:
                _raise_if_port_taken(argv[0], fatal)
                raise LocalClusterError(f"{argv[0]} failed to start: {fatal} (see {log})")
            time.sleep(0.05)
        raise LocalClusterError(f"{argv[0]} did not write {pid_file} in 15 s; its log's last "
                                f"line: {_last_line(log)} (see {log})")

    def _log(self, daemon: str) -> Path:
        return self.directory / "log" / f"{daemon}.log"

    def _check_port_taken(self, daemon: str, log: Path) -> None:
        """For a daemon that died after it started: was its port taken?"""
        _raise_if_port_taken(daemon, _log_since(log, self._log_start.get(log, 0)))

    def _wait_controller(self) -> None:
        adapter = self.adapter(timeout=5.0)
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                adapter.run("scontrol", ["ping"])
                return
            except SlurmError as exc:
                last = exc
            if not processes.alive(self._read_pid("slurmctld")):
                self._check_port_taken("slurmctld", self._log("slurmctld"))
                break
            time.sleep(0.2)
        raise LocalClusterError(f"slurmctld did not answer: {last} "
                                f"(see {self.directory / 'log' / 'slurmctld.log'})")

    def _wait_idle(self, want: str = "idle", timeout_s: float | None = None) -> None:
        adapter = self.adapter(timeout=5.0)
        limit = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        states: dict[str, str] = {}
        expected = len(self.node_names_on_disk())
        while time.monotonic() < deadline:
            try:
                nodes = adapter.nodes().nodes
            except SlurmError:
                nodes = ()
            states = {n.name: n.state for n in nodes}
            if len(states) == expected and all(s == want for s in states.values()):
                return
            time.sleep(0.2)
        raise LocalClusterError(f"nodes not {want} after {limit:.0f}s: {states} "
                                f"(see {self.directory / 'log'})")

    def _pid_files(self) -> Iterator[tuple[str, int | None]]:
        yield "munged", self._read_pid("munged")
        if self.has_accounting:
            yield "mariadbd", self._read_pid("mariadbd")
            yield "slurmdbd", self._read_pid("slurmdbd")
        yield "slurmctld", self._read_pid("slurmctld")
        for name in self.node_names_on_disk():
            yield f"slurmd.{name}", self._read_pid(f"slurmd.{name}")

    def node_names_on_disk(self) -> list[str]:
        """Node names from the written slurm.conf (falls back to the constructor's)."""
        if not self.conf_path.exists():
            return self.node_names()
        names = []
        for line in self.conf_path.read_text().splitlines():
            if line.startswith("NodeName="):
                names.append(line.split()[0].split("=", 1)[1])
        return names

    def _read_pid(self, name: str) -> int | None:
        if name == "munged":
            return processes.read_pid(self.munge_dir / "munged.pid")
        return processes.read_pid(self.run_dir / f"{name}.pid")

    def _any_alive(self) -> bool:
        return any(pid is not None and processes.alive(pid) and self._is_ours(pid)
                   for _, pid in self._pid_files())

    def _is_ours(self, pid: int) -> bool:
        """A daemon or slurmstepd we started (marker), or a job process of this cluster
        (its SLURM_CONF and a SLURM_JOB_ID). A user's shell that merely exports our
        SLURM_CONF is not ours."""
        env = processes.environ(pid)
        if env.get("GPUWARDEN_SLURM_LOCAL") == str(self.directory):
            return True
        return env.get("SLURM_CONF") == str(self.conf_path) and "SLURM_JOB_ID" in env

    def leftover_pids(self) -> list[int]:
        """Processes started by (or for) this cluster: slurmstepd, job scripts, daemons."""
        own = os.getpid()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == own:
                continue
            pid = int(entry.name)
            if self._is_ours(pid) and processes.alive(pid):
                found.append(pid)
        return found


def check_prerequisites() -> None:
    """Raise one clear error naming what is missing to run a local cluster."""
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}; install with `{INSTALL_HINT}`")
    if os.geteuid() != 0:
        problems.append("a local Slurm cluster must run as root (slurmd and mknod need it)")
    if problems:
        raise LocalClusterError("; ".join(problems))


def memory_cgroup_unavailable() -> str | None:
    """Why task/cgroup cannot confine memory here (None: it can): a cgroup v1 memory
    controller or a cgroup v2 hierarchy offering ``memory``, writable by this process."""
    v1 = MEMORY_CGROUP / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        return None if os.access(v1, os.W_OK) else f"{v1} is not writable"
    controllers = MEMORY_CGROUP / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return None if os.access(MEMORY_CGROUP, os.W_OK) else f"{MEMORY_CGROUP} is not writable"
    return f"no memory cgroup controller under {MEMORY_CGROUP}"


def _which(binary: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return shutil.which(binary, path=path)


_PORT_ATTEMPTS = 3


class _PortTaken(LocalClusterError):
    """A daemon could not bind the port chosen for it: ``up`` starts over on others."""


def _raise_if_port_taken(daemon: str, text: str) -> None:
    lines = [re.sub(r"^\[[^]]*\]\s*", "", ln.strip()) for ln in text.splitlines()
             if "in use" in ln]
    if lines:  # the line naming the port when there is one (slurmd logs two)
        raise _PortTaken(f"{daemon}: " + next((ln for ln in lines if "port" in ln), lines[0]))


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def _log_since(log: Path, offset: int) -> str:
    """What a daemon logged past ``offset`` (this start's part of its log)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return f.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def _fatal_line(log: Path, offset: int) -> str | None:
    """The first fatal error a daemon logged past ``offset``."""
    text = _log_since(log, offset)
    for line in text.splitlines():
        if "fatal:" in line or "Fatal:" in line:
            return line.strip()
    taken = [line for line in text.splitlines() if "in use" in line]
    return "\n".join(taken) or None  # slurmd logs its failed bind as errors, then exits


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def _reachable(path: Path) -> bool:
    """Every existing directory on the way to ``path`` is searchable by everyone."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.exists())









