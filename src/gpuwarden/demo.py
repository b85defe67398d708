"""``gpuwarden demo``: the whole system on one machine, with no GPU and no cloud account.

A local cluster (simulated GPUs, clearly labelled; a real multi-node Slurm when it is
installed and we are root), the control plane with its web UI and watchdog, and a scripted
workload that gives every part something true to show: a 2-node training job, an inference
job, a job that holds a GPU and does nothing, a thermal event, XIDs, jobs pending for
Resources, jobs finishing and failing.  Ctrl-C (or ``--duration``) stops everything and
leaves no process and no Slurm state behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gpuwarden.config import ServeConfig, Settings, WatchdogConfig
from gpuwarden.errors import GpuwardenError, NotFoundError
from gpuwarden.net import bind
from gpuwarden.providers import lifecycle
from gpuwarden.providers.local import slurm_unavailable
from gpuwarden.providers.spec import ClusterDescription
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.db import StateDB

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


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    gpus_per_node: int = 4
    host: str = "127.0.0.1"
    port: int = 8080
    duration: float | None = None
    headless: bool = False


@dataclass
class Demo:
    """The demo's cluster is a ``provider: local`` cluster brought up by the same lifecycle
    as ``gpuwarden up``; its workload goes through the control plane's Slurm service."""

    options: DemoOptions
    db: StateDB
    say: Callable[[str], None] = print
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def spec(self) -> ClusterDescription:
        return ClusterDescription(name=CLUSTER, provider="local", nodes=self.options.nodes,
                                  gpus_per_node=self.options.gpus_per_node, gpu_type="h100",
                                  slurm=True, price_per_gpu_hour=GPU_PRICE_PER_HOUR)

    def start_cluster(self) -> None:
        why = slurm_unavailable()
        usable = why is None
        self.say(f"starting a local cluster: {self.options.nodes} nodes x "
                 f"{self.options.gpus_per_node} simulated H100s"
                 + ("" if usable else f" (no Slurm: {why}; the GPUs stay idle)"))
        lifecycle.up(self.spec, self.db, progress=lambda line: log.info("cluster: %s", line))
        self.say(f"{self.options.nodes} node daemons up (simulated GPUs, labelled "
                 'simulated="true")' + (", joined in a real Slurm cluster" if usable else ""))

    def run_workload(self, cp: ControlPlane) -> None:
        """Submit the scripted jobs through the control plane; then keep a trickle of jobs
        finishing and failing."""
        if slurm_unavailable() is not None:
            return
        asyncio.run(self._workload(cp))

    async def _workload(self, cp: ControlPlane) -> None:
        from gpuwarden.services import slurm

        out = self.db.path.parent / "jobs"
        out.mkdir(exist_ok=True)
        g, nodes = self.options.gpus_per_node, self.options.nodes

        async with httpx.AsyncClient() as client:

            async def job(name: str, seconds: int, profile: str | None = None,
                          exit_code: int = 0, **opts: object) -> None:
                # a time limit lets the scheduler backfill short jobs around big ones
                minutes = max(1, seconds // 60 + 1)
                body = {"script": f"#!/bin/sh\nsleep {seconds}\nexit {exit_code}\n",
                        "name": name, "workdir": str(out), "output": f"{out}/%j.out",
                        "time": str(minutes), **opts}
                if profile:
                    body["comment"] = f"gpuwarden:profile={profile}"
                try:
                    result = await slurm.submit(cp, client, "demo", body)
                    log.info("submitted %s as job %s", name, result.job_id)
                except GpuwardenError as exc:
                    log.warning("could not submit %s: %s", name, exc)

            # the steady story: every GPU of the cluster gets something to show
            if nodes >= 2 and g >= 2:
                await job("llm-pretrain", 3600, "train", nodes=2, gres=f"gpu:{g}")
            await job("flaky-kernel", 30, "xid-storm", gres="gpu:1")
            await job("chat-inference", 3600, "inference", gres="gpu:1")
            await job("forgotten-notebook", 3600, "idle", gres="gpu:1")
            await job("hot-finetune", 150, "thermal-throttle", gres="gpu:1")
            await job("big-sweep", 600, "train", nodes=nodes, gres=f"gpu:{g}")  # Resources
            await job("eval-batch", 300, "train", gres=f"gpu:{g}")
            cycle = 0
            while not self.stop.is_set():
                await asyncio.sleep(15)
                cycle += 1
                await job(f"preprocess-{cycle}", 8)                    # finishes
                await job(f"broken-{cycle}", 3, exit_code=1)           # fails
                if cycle % 4 == 0:
                    await job(f"hot-finetune-{cycle}", 60, "thermal-throttle", gres="gpu:1")

    def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(NotFoundError):
            lifecycle.down(CLUSTER, self.db, progress=lambda line: log.info("cluster: %s", line))


def run_demo(options: DemoOptions) -> None:
    import uvicorn

    from gpuwarden.api.app import create_app
    from gpuwarden.api.web import DIST
    from gpuwarden.server import attach_background, open_control_plane

    if options.nodes < 1 or options.gpus_per_node < 1:
        raise GpuwardenError("--nodes and --gpus-per-node must be at least 1")
    home = Settings().home / "demo"
    sock = bind(options.host, options.port)  # fail fast on a busy port, before starting anything
    if home.exists():  # a previous demo killed hard may have left its cluster: end it first
        old = StateDB(home / "state.db")
        Demo(options, old).shutdown()
        old.close()
        shutil.rmtree(home)
    home.mkdir(parents=True)
    demo = Demo(options, StateDB(home / "state.db"))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        demo.start_cluster()
        config = ServeConfig(cluster=CLUSTER, scrape={"interval": 2, "timeout": 2},
                             watchdog=WatchdogConfig(interval=2, rules=DEMO_RULES))
        cp = open_control_plane(config, home)
        attach_background(cp)
        token = cp.tokens.create("operator", "demo operator")
        url = f"http://{options.host}:{sock.getsockname()[1]}"
        demo.say(f"gpuwarden demo: open {url}/login?token={token}")
        demo.say(f"data in {home}; Ctrl-C stops everything"
                 + (f"; ends by itself after {options.duration:g} s" if options.duration else ""))
        if not (DIST / "index.html").is_file():
            demo.say("the web UI is not built (run `make web`); the API works meanwhile")
        threading.Thread(target=demo.run_workload, args=(cp,), name="demo-workload",
                         daemon=True).start()
        server = uvicorn.Server(uvicorn.Config(create_app(cp), log_level="warning",
                                               access_log=False))
        if options.duration:
            timer = threading.Timer(options.duration,
                                    lambda: setattr(server, "should_exit", True))
            timer.daemon = True
            timer.start()
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
        cp.store.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        demo.say("stopping the demo: node daemons, Slurm, munge")
        demo.shutdown()
        demo.say("stopped; nothing is left running")


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt
