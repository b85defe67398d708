"""``gpuwarden node``: wire a GPU source, the poller and the HTTP app, then serve."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.bearer import check_token, read_token_file
from gpuwarden.errors import GpuwardenError
from gpuwarden.net import bind, is_loopback, url_host

log = logging.getLogger(__name__)

TOKEN_ENV = "GPUWARDEN_NODE_TOKEN"


@dataclass(frozen=True)
class NodeOptions:
    host: str = "127.0.0.1"
    port: int = 9400
    gpu_backend: str = "auto"
    sim_gpus: int = 4
    sim_model: str = "h100"
    sim_profile: str | None = None
    sim_fault: str | None = None
    sim_fault_file: Path | None = None
    interval: float = 5.0
    token_file: Path | None = None
    no_auth: bool = False
    hostname: str | None = None
    hostname_label: str = "Hostname"
    slurm: bool = False
    slurm_controller: bool = False
    slurm_node: str | None = None
    slurm_interval: float = 15.0


MIN_INTERVAL = 0.1  # seconds between GPU polls: below it the poller is all the daemon does
MIN_SLURM_INTERVAL = 1.0  # seconds between Slurm cycles: below it slurmctld is hammered


def resolve_token(token_file: Path | None, no_auth: bool, host: str) -> str | None:
    """The bearer token the daemon demands, or None for an unauthenticated loopback node."""
    if no_auth:
        if not is_loopback(host):
            raise GpuwardenError(
                f"--no-auth is only allowed on a loopback address, not --host {host}: "
                "give the daemon a token with --token-file PATH or "
                f"{TOKEN_ENV}, or bind to 127.0.0.1"
            )
        return None
    if token_file is not None:
        return read_token_file(token_file, f"--token-file {token_file}")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return check_token(token, TOKEN_ENV)
    raise GpuwardenError(
        f"no token: the node daemon demands one. Pass --token-file PATH or set {TOKEN_ENV} "
        "(or --no-auth, allowed on a loopback --host only)"
    )


def check_hostname_label(label: str) -> str:
    """``--hostname-label``: one of :data:`~gpuwarden.gpu.series.HOSTNAME_LABELS`."""
    from gpuwarden.gpu.series import HOSTNAME_LABELS

    if label not in HOSTNAME_LABELS:
        raise GpuwardenError(f"--hostname-label {label!r}: use Hostname (dcgm-exporter's "
                             "label) or hostname (its new name, dcgm-exporter#655)")
    return label


def build_source(options: NodeOptions, hostname: str):  # -> GpuSource
    from gpuwarden.gpu import NoGpuFound, open_source
    from gpuwarden.gpu.sim import parse_faults, parse_profiles

    if options.gpu_backend not in ("auto", "nvml", "sim"):
        raise GpuwardenError(
            f"--gpu-backend {options.gpu_backend!r} is not a backend; use auto, nvml or sim"
        )
    try:
        sim = options.gpu_backend == "sim"
        profiles = parse_profiles(options.sim_profile, options.sim_gpus) if sim else None
        faults = parse_faults(options.sim_fault, options.sim_gpus) if sim else None
        return open_source(
            options.gpu_backend,
            sim_gpus=options.sim_gpus,
            sim_model=options.sim_model,
            sim_profiles=profiles,
            hostname=hostname,
            sim_faults=faults,
            sim_fault_file=options.sim_fault_file if sim else None,
        )
    except NoGpuFound as exc:
        raise GpuwardenError(str(exc)) from None
    except ValueError as exc:
        raise GpuwardenError(str(exc)) from None


def build_slurm(options: NodeOptions, hostname: str):  # -> SlurmBridge | None
    """The Slurm collector (and on the controller, metrics, API and actions), or None."""
    if not (options.slurm or options.slurm_controller):
        return None
    if options.slurm_interval < MIN_SLURM_INTERVAL:
        raise GpuwardenError(f"--slurm-interval {options.slurm_interval:g}: give at least "
                             f"{MIN_SLURM_INTERVAL:g} second (each cycle runs squeue, sinfo "
                             "and sdiag against slurmctld; 15 is the default)")
    import shutil

    from gpuwarden.node.slurm import SlurmBridge
    from gpuwarden.slurm import SlurmActions, SlurmAdapter, SlurmCollector

    if shutil.which("squeue") is None:
        raise GpuwardenError("--slurm: the Slurm client commands (squeue, sinfo, scontrol) are "
                             "not on PATH; install them (apt-get install -y slurm-client) or "
                             "drop --slurm")
    adapter = SlurmAdapter()
    # Finished jobs (sacct, exit codes) only where the Slurm API is served: the controller.
    collector = SlurmCollector(adapter, options.slurm_interval,
                               finished_jobs=options.slurm_controller,
                               accounting_interval=max(4 * options.slurm_interval, 10.0))
    bridge = SlurmBridge(collector, SlurmActions(adapter), options.slurm_node or hostname,
                         controller=options.slurm_controller)
    collector.collect_once()  # the first snapshot before serving; failures are recorded in it
    collector.start()
    return bridge


def run_node(options: NodeOptions) -> None:
    import uvicorn

    from gpuwarden.node.app import create_app
    from gpuwarden.node.poller import GpuPoller

    if not 0 < options.port < 65536:
        raise GpuwardenError(f"--port {options.port} is not a TCP port; use 1-65535")
    if options.interval < MIN_INTERVAL:
        raise GpuwardenError(f"--interval {options.interval:g}: give at least {MIN_INTERVAL:g} "
                             "seconds (a poll reads every GPU through NVML; 5 is the default)")
    if options.gpu_backend == "sim" and options.sim_gpus < 1:
        raise GpuwardenError(f"--sim-gpus {options.sim_gpus} must be at least 1")
    token = resolve_token(options.token_file, options.no_auth, options.host)
    hostname = options.hostname or socket.gethostname()
    host_label = check_hostname_label(options.hostname_label)
    source = build_source(options, hostname)
    bridge = build_slurm(options, hostname)
    poller = GpuPoller(source, hostname=hostname, hostname_label=host_label,
                       interval=options.interval)
    if bridge is not None:
        poller.set_allocations(bridge.allocations)
        if source.backend == "sim":
            from gpuwarden.gpu.sim import parse_profiles

            base = parse_profiles(options.sim_profile, options.sim_gpus)
            poller.set_before_poll(lambda: source.set_profiles(bridge.profiles(base)))
    app = create_app(poller.latest, token=token,
                     extra_collectors=bridge.metric_collectors() if bridge else (),
                     extra_routes=bridge.routes() if bridge else ())
    # bind first, so a port in use is one clear line and not a traceback
    sock = bind(options.host, options.port)
    poller.start()
    gpus = len(poller.latest().poll.gpus) if poller.latest() else 0
    url = f"http://{url_host(options.host)}:{sock.getsockname()[1]}"
    sim_note = " (simulated)" if source.backend == "sim" else ""
    auth = "no auth, loopback only" if token is None else "bearer token required"
    print(f"gpuwarden node: {gpus} GPU(s){sim_note} via {source.backend}, serving {url}/metrics "
          f"and {url}/api/v1/snapshot ({auth})", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        poller.stop()
        if bridge is not None:
            bridge.collector.stop()
