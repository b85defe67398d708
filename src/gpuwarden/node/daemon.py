"""``gpuwarden node``: wire a GPU source, the poller and the HTTP app, then serve."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.errors import GpuwardenError

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
    interval: float = 5.0
    token_file: Path | None = None
    no_auth: bool = False
    hostname: str | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        try:
            info = token_file.stat()
            token = token_file.read_text().strip()
        except OSError as exc:
            raise GpuwardenError(
                f"--token-file {token_file}: cannot read it ({exc.strerror}); "
                "point it at a readable file holding the token"
            ) from None
        if not token:
            raise GpuwardenError(f"--token-file {token_file}: the file is empty; write the "
                                 "token into it (e.g. `openssl rand -hex 32 > FILE`)")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by other users; chmod 600 it", token_file)
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    raise GpuwardenError(
        f"no token: the node daemon demands one. Pass --token-file PATH or set {TOKEN_ENV} "
        "(or --no-auth, allowed on a loopback --host only)"
    )


def build_source(options: NodeOptions, hostname: str):  # -> GpuSource
    from gpuwarden.gpu import NoGpuFound, open_source
    from gpuwarden.gpu.sim import parse_profiles

    if options.gpu_backend not in ("auto", "nvml", "sim"):
        raise GpuwardenError(
            f"--gpu-backend {options.gpu_backend!r} is not a backend; use auto, nvml or sim"
        )
    try:
        profiles = (
            parse_profiles(options.sim_profile, options.sim_gpus)
            if options.gpu_backend == "sim"
            else None
        )
        return open_source(
            options.gpu_backend,
            sim_gpus=options.sim_gpus,
            sim_model=options.sim_model,
            sim_profiles=profiles,
            hostname=hostname,
        )
    except NoGpuFound as exc:
        raise GpuwardenError(str(exc)) from None
    except ValueError as exc:
        raise GpuwardenError(str(exc)) from None


def run_node(options: NodeOptions) -> None:
    import uvicorn

    from gpuwarden.node.app import create_app
    from gpuwarden.node.poller import GpuPoller

    if not 0 < options.port < 65536:
        raise GpuwardenError(f"--port {options.port} is not a TCP port; use 1-65535")
    if options.interval <= 0:
        raise GpuwardenError(f"--interval {options.interval} must be greater than 0 seconds")
    if options.gpu_backend == "sim" and options.sim_gpus < 1:
        raise GpuwardenError(f"--sim-gpus {options.sim_gpus} must be at least 1")
    token = resolve_token(options.token_file, options.no_auth, options.host)
    hostname = options.hostname or socket.gethostname()
    source = build_source(options, hostname)
    poller = GpuPoller(source, hostname=hostname, interval=options.interval)
    app = create_app(poller.latest, token=token)
    # bind first, so a port in use is one clear line and not a traceback
    sock = _bind(options.host, options.port)
    poller.start()
    gpus = len(poller.latest().poll.gpus) if poller.latest() else 0
    url = f"http://{_url_host(options.host)}:{sock.getsockname()[1]}"
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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GpuwardenError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
            "pick another --port or stop what uses it"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
