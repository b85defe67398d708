"""``gpuwarden demo``: the whole system on one machine, with no GPU and no cloud account.

A local cluster (simulated GPUs, clearly labelled; a real multi-node Slurm when it is
installed and we are root), the control plane with its web UI and watchdog, and a scripted
workload that gives every part something true to show: a 2-node training job, an inference
job, a job that holds a GPU and does nothing, a thermal event, XIDs, jobs pending for
Resources, jobs finishing and failing, as several Unix users (alice, bob, carol) when we are
root.  Every way it ends (Ctrl-C in a terminal or through a pipe, SIGTERM, SIGHUP, a closed
stdout, ``--duration``, an error) takes the same path and leaves no process and no Slurm
state behind; one demo per ``GPUWARDEN_HOME`` (a second one says how to run beside it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from gpuwarden import processes, runtime
from gpuwarden.config import ServeConfig, Settings, WatchdogConfig
from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.net import bind, url_host
from gpuwarden.providers import lifecycle
from gpuwarden.providers.local import slurm_unavailable
from gpuwarden.providers.spec import ClusterDescription
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.db import StateDB
from gpuwarden.stopping import Stop, Stopper, make_server, stop_requests

log = logging.getLogger(__name__)

GPU_PRICE_PER_HOUR = 2.69  # an on-demand H100 on a GPU cloud, $/hr
# Short windows so alerts fire and resolve within a minute or two of demo time.
DEMO_RULES = {
    "gpu_idle": {"for": "20s"},
    "gpu_allocated_idle": {"for": "20s"},
    "thermal_throttle": {"for": "10s"},
    "node_down": {"for": "10s"},
    "gpu_memory_full": {"for": "30s"},
    "job_pending_too_long": {"after": {"Resources": "30s", "Priority": "60s"}},
    "job_stuck_completing": {"for": "60s"},
    "xid_application": {"keep_firing_for": "20s"},
    "xid_hardware": {"keep_firing_for": "20s"},
}
CLUSTER = "demo"
USERS = ("alice", "bob", "carol")  # the workload's job owners, when we are root
STATUS_EVERY_S = 15.0  # --headless: one status line this often


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    gpus_per_node: int = 4
    host: str = "127.0.0.1"
    port: int = 8080
    duration: float | None = None
    headless: bool = False


class Console:
    """What the demo tells its user.  Interactive: the lines that matter, and the start's
    progress on one line that rewrites itself on a terminal.  ``--headless``: plain lines
    only, each stamped with the seconds since start: every step, every job submitted and a
    status line every STATUS_EVERY_S, for scripts and CI logs."""

    def __init__(self, stopper: Stopper, headless: bool) -> None:
        self.stopper = stopper
        self.headless = headless
        self.live = not headless and sys.stdout.isatty()
        self._t0 = time.monotonic()
        self._open = False  # a progress line is on screen, to be overwritten
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            if self._open:
                self.stopper.say("\r\x1b[2K", end="")
                self._open = False
            self.stopper.say(self._stamp(text))

    def step(self, text: str) -> None:
        """Progress of a start or a stop."""
        log.debug("demo: %s", text)
        if not self.live:
            self.say(f"  {text}")
            return
        with self._lock:
            self.stopper.say(f"\r\x1b[2K  {text}…", end="")
            self._open = True

    def event(self, text: str) -> None:
        """Something the workload did: a line in --headless, the web UI's business else."""
        log.debug("demo: %s", text)
        if self.headless:
            self.say(text)

    def _stamp(self, text: str) -> str:
        return f"[{time.monotonic() - self._t0:6.1f}s] {text}" if self.headless else text


@dataclass
class Demo:
    """The demo's cluster is a ``provider: local`` cluster brought up by the same lifecycle
    as ``gpuwarden up``; its workload goes through the control plane's Slurm service."""

    options: DemoOptions
    db: StateDB
    console: Console
    stop: threading.Event = field(default_factory=threading.Event)
    users: tuple[str, ...] = ()  # set: jobs run as these users (sbatch --uid)
    job_dir: Path | None = None
    _down: bool = False
    _down_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def home(self) -> Path:
        return self.db.path.parent

    @property
    def spec(self) -> ClusterDescription:
        return ClusterDescription(name=CLUSTER, provider="local", nodes=self.options.nodes,
                                  gpus_per_node=self.options.gpus_per_node, gpu_type="h100",
                                  slurm=True, price_per_gpu_hour=GPU_PRICE_PER_HOUR)

    def start_cluster(self) -> None:
        why = slurm_unavailable()
        usable = why is None
        self.console.say(f"starting a local cluster: {self.options.nodes} nodes x "
                         f"{self.options.gpus_per_node} simulated H100s"
                         + ("" if usable else f" (no Slurm: {why}; the GPUs stay idle)"))
        if usable:
            # before the cluster starts: slurmctld maps the accounting users to uids when it
            # loads their associations, and a user created after that has none, so every
            # job it submits is refused ("Invalid account") on a machine's first demo
            self.users = workload_users(self.console.say)
            self.job_dir = job_dir(self.home, shared=bool(self.users))
        lifecycle.up(self.spec, self.db, progress=self.console.step)
        self.console.say(f"{self.options.nodes} node daemons up (simulated GPUs, labelled "
                         'simulated="true")' + (", joined in a real Slurm cluster" if usable
                                                 else ""))

    def run_workload(self, cp: ControlPlane) -> None:
        """Submit the scripted jobs through the control plane; then keep a trickle of jobs
        finishing and failing."""
        if slurm_unavailable() is not None:
            return
        try:
            asyncio.run(self._workload(cp))
        except Exception:
            if not self.stop.is_set():  # while stopping, Slurm going away is expected
                log.exception("the demo workload stopped")

    async def _workload(self, cp: ControlPlane) -> None:
        from gpuwarden.services import slurm

        out = self.job_dir or self.home / "jobs"
        out.mkdir(exist_ok=True)
        g, nodes = self.options.gpus_per_node, self.options.nodes
        owners = self.users or (None,)
        turn = 0

        async with httpx.AsyncClient() as client:

            async def job(name: str, seconds: int, profile: str | None = None,
                          exit_code: int = 0, user: int | None = None, **opts: object) -> None:
                nonlocal turn
                if self.stop.is_set():
                    return
                owner = owners[(turn if user is None else user) % len(owners)]
                turn += 1
                # a time limit lets the scheduler backfill short jobs around big ones
                minutes = max(1, seconds // 60 + 1)
                body = {"script": f"#!/bin/sh\nsleep {seconds}\nexit {exit_code}\n",
                        "name": name, "workdir": str(out), "output": f"{out}/%j.out",
                        "time": str(minutes), **opts}
                if owner is not None:
                    body["user"] = owner
                if profile:
                    body["comment"] = f"gpuwarden:profile={profile}"
                try:
                    result = await slurm.submit(cp, client, "demo", body)
                    self.console.event(f"job {result.job_id} {name} submitted"
                                       + (f" as {owner}" if owner else ""))
                except GpuwardenError as exc:
                    if not self.stop.is_set():
                        log.warning("could not submit %s: %s", name, exc)

            # the steady story: every GPU of the cluster gets something to show
            if nodes >= 2 and g >= 2:
                await job("llm-pretrain", 3600, "train", user=0, nodes=2, gres=f"gpu:{g}")
            await job("flaky-kernel", 30, "xid-storm", user=1, gres="gpu:1")
            await job("chat-inference", 3600, "inference", user=1, gres="gpu:1")
            await job("forgotten-notebook", 3600, "idle", user=2, gres="gpu:1")
            await job("hot-finetune", 150, "thermal-throttle", user=0, gres="gpu:1")
            await job("big-sweep", 600, "train", user=2, nodes=nodes,
                      gres=f"gpu:{g}")  # Resources
            await job("eval-batch", 300, "train", user=1, gres=f"gpu:{g}")
            cycle = 0
            while not await asyncio.to_thread(self.stop.wait, 15):
                cycle += 1
                await job(f"preprocess-{cycle}", 8)                    # finishes
                await job(f"broken-{cycle}", 3, exit_code=1)           # fails
                if cycle % 4 == 0:
                    await job(f"hot-finetune-{cycle}", 60, "thermal-throttle", gres="gpu:1")

    def report_status(self, cp: ControlPlane) -> None:
        """--headless: a status line every STATUS_EVERY_S."""
        from gpuwarden.services.live import overview

        while not self.stop.wait(STATUS_EVERY_S):
            try:
                o = overview(cp)
            except Exception as exc:  # a status line is not worth stopping the demo for
                log.debug("status: %s", exc)
                continue
            q = o.slurm
            self.console.event(
                f"status: {o.nodes.up}/{o.nodes.total} nodes up, {o.gpus.busy}/"
                f"{o.gpus.total} GPUs busy, "
                + (f"{q.running} jobs running, {q.pending} pending, " if q else "")
                + f"{o.alerts_active} alert(s) firing, waste ${o.waste_per_hour:.2f}/hr")

    def shutdown(self) -> list[int]:
        """Stop the cluster and sweep what it left; returns the pids still alive (none, or
        the stop failed).  Safe to call twice (``atexit`` is the last resort)."""
        with self._down_lock:
            if self._down:
                return []
            self._down = True
        self.stop.set()
        try:
            with contextlib.suppress(NotFoundError):
                lifecycle.down(CLUSTER, self.db, progress=self.console.step)
        except GpuwardenError as exc:
            log.warning("stopping the demo's cluster: %s", exc)
        # whatever still names this demo's home (a daemon whose pid file was lost, a job
        # process that outlived its slurmd) goes too
        keys = (processes.MARKER, "GPUWARDEN_SLURM_LOCAL", "SLURM_CONF")
        left = processes.under(self.home, keys)
        if left:
            self.console.step(f"stopping {len(left)} leftover process(es)")
            processes.terminate_all(left, timeout_s=3)
        if self.job_dir is not None and not self.job_dir.is_relative_to(self.home):
            shutil.rmtree(self.job_dir, ignore_errors=True)
        return [p for p in processes.under(self.home, keys)]


def workload_users(say: Callable[[str], None]) -> tuple[str, ...]:
    """The Unix users the workload's jobs run as: alice, bob and carol, created as system
    users (no home, no login) when missing.  Not root, or no useradd: none (jobs run as
    whoever runs the demo), and the demo says so."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() != 0:
        say(f"jobs run as {me}: only root can run them as several users")
        return ()
    useradd = shutil.which("useradd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    created, failed = [], []
    for name in USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            continue
        if useradd is None:
            failed.append(name)
            continue
        done = subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", "--comment", "gpuwarden demo user", name],
                              capture_output=True, text=True, check=False)
        (created if done.returncode == 0 else failed).append(name)
        if done.returncode != 0:
            log.warning("useradd %s: %s", name, done.stderr.strip())
    users = tuple(n for n in USERS if n not in failed)
    if created:
        say(f"created system users {', '.join(created)} (no home, no login) to own the "
            f"demo's jobs; `userdel {' '.join(created)}` removes them")
    if not users:
        say(f"jobs run as {me}: could not create the demo users ({', '.join(failed)})")
        return ()
    say(f"jobs run as {', '.join(users)}")
    return users


def job_dir(home: Path, shared: bool) -> Path:
    """Where jobs write their output: ``home/jobs``, or, when jobs run as other users who
    cannot reach ``home`` (``/root`` is 0700), a sticky world-writable directory under the
    temp directory (removed by the stop)."""
    if not shared:
        return home / "jobs"
    reachable = all(p.stat().st_mode & stat.S_IXOTH for p in (home, *home.parents)
                    if p.exists())
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    path = home / "jobs" if reachable else Path(tempfile.gettempdir()) / f"gpuwarden-jobs-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o1777)
    return path


def _claim(base: Path, home: Path, port: int) -> IO[str]:
    """One demo per GPUWARDEN_HOME: hold ``base/demo.lock`` for the demo's whole life (the
    kernel lets go when the process ends, however it ends)."""
    base.mkdir(parents=True, exist_ok=True)
    lock = (base / "demo.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise GpuwardenError(_busy(base, home, runtime.read(home), holder, port)) from None
    info = runtime.read(home)
    if info is not None and info.pid != os.getpid():  # a demo of a version without the lock
        lock.close()
        raise GpuwardenError(_busy(base, home, info, str(info.pid), port))
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _busy(base: Path, home: Path, info: runtime.RuntimeInfo | None, holder: str,
          port: int) -> str:
    where = f"pid {info.pid}, {info.url}" if info else f"pid {holder or '?'}, starting or stopping"
    other = f"{base}-2"
    return (f"a demo is already running with GPUWARDEN_HOME={base} ({where}); its data in "
            f"{home} stays as it is. Stop it first (Ctrl-C where it runs), or run a second "
            f"demo beside it with its own home and port: "
            f"GPUWARDEN_HOME={other} gpuwarden demo --port {port + 1}")


def run_demo(options: DemoOptions) -> None:
    if options.nodes < 1 or options.gpus_per_node < 1:
        raise GpuwardenError("--nodes and --gpus-per-node must be at least 1")
    if not 0 < options.port < 65536:
        raise GpuwardenError(f"--port {options.port} is not a TCP port; use 1-65535")
    base = Settings().home
    home = base / "demo"
    with stop_requests() as stopper:
        lock = _claim(base, home, options.port)
        try:
            _run(options, home, stopper, Console(stopper, options.headless))
        finally:
            lock.close()


def _run(options: DemoOptions, home: Path, stopper: Stopper, console: Console) -> None:
    from gpuwarden.api.app import create_app
    from gpuwarden.api.web import DIST
    from gpuwarden.server import attach_background, open_control_plane

    sock = bind(options.host, options.port)  # fail fast on a busy port, before starting anything
    stopper.watch_stdout()
    if home.exists():  # a previous demo killed hard may have left its cluster: end it first
        old = StateDB(home / "state.db")
        Demo(options, old, console).shutdown()
        old.close()
        shutil.rmtree(home)
    home.mkdir(parents=True)
    demo = Demo(options, StateDB(home / "state.db"), console)
    atexit.register(demo.shutdown)
    cp = None
    try:
        with contextlib.suppress(Stop):  # a stop during the start goes straight to the teardown
            demo.start_cluster()
            # reclaim in dry-run, on a short ladder: the forgotten notebook shows its stage
            # ("would warn", "would cancel") within minutes, and nothing is cancelled; a
            # failed node check (the XID 79 GPU) proposes its drain for the operator
            config = ServeConfig(cluster=CLUSTER, scrape={"interval": 2, "timeout": 2},
                                 watchdog=WatchdogConfig(interval=2, rules=DEMO_RULES),
                                 checks={"drain": "approve"},
                                 reclaim={"interval": "5s", "jobs": {
                                     "mode": "dry-run", "warn_after": ["2m", "4m"],
                                     "act_after": "5m", "grace": "30s"}})
            cp = open_control_plane(config, home)
            attach_background(cp)
            token = cp.tokens.create("operator", "demo operator")
            local = cp.tokens.create("admin", "demo: local CLI (runtime file)")
            url = f"http://{url_host(options.host)}:{sock.getsockname()[1]}"
            console.say(f"gpuwarden demo: open {url}/login?token={token}")
            console.say(f"data in {home}; Ctrl-C stops everything"
                        + (f"; ends by itself after {options.duration:g} s"
                           if options.duration else ""))
            if not (DIST / "index.html").is_file():
                console.say("the web UI is not built (run `make web`); the API works meanwhile")
            threading.Thread(target=demo.run_workload, args=(cp,), name="demo-workload",
                             daemon=True).start()
            if options.headless:
                threading.Thread(target=demo.report_status, args=(cp,), name="demo-status",
                                 daemon=True).start()
            server = make_server(create_app(cp), cp.closing, log_level="warning", access_log=False,
                                 timeout_graceful_shutdown=3)
            stopper.server = server
            if options.duration:
                timer = threading.Timer(options.duration, stopper.request,
                                        args=(f"--duration {options.duration:g}",))
                timer.daemon = True
                timer.start()
            runtime.publish(home, "demo", url, local)
            server.run(sockets=[sock])
    finally:
        stopper.settle("the demo ended")  # from here on, signals cannot cut the stop short
        stopper.server = None
        runtime.withdraw(home)
        sock.close()
        if cp is not None:
            cp.store.close()
            cp.db.close()
        console.say(f"stopping the demo ({stopper.reason}): node daemons, Slurm, munge")
        left = demo.shutdown()
        atexit.unregister(demo.shutdown)
        demo.db.close()
    if left:
        raise GpuwardenError(f"the demo could not stop processes {left}; "
                             f"`kill -9 {' '.join(map(str, left))}` ends them")
    console.say("stopped; nothing is left running")
