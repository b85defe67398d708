"""``gpuwarden serve``: wire configuration, state, store, scraper and API, then serve."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.config import ServeConfig, Settings, load_config
from gpuwarden.errors import GpuwardenError
from gpuwarden.net import bind, url_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080


def open_control_plane(config: ServeConfig, home: Path, *, sync: bool = True):  # -> ControlPlane
    from gpuwarden.metrics import open_store
    from gpuwarden.services.context import ControlPlane
    from gpuwarden.state.db import StateDB

    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GpuwardenError(f"GPUWARDEN_HOME {home}: cannot create it ({exc.strerror})") from None
    db = StateDB(home / "state.db")
    store = open_store(config.store, home)
    cp = ControlPlane(config=config, db=db, store=store)
    if sync:
        cp.inventory.sync_config(config.cluster, config.nodes)
    return cp


def attach_background(cp) -> None:  # cp: ControlPlane
    """Give ``cp`` its scraper and (when enabled) watchdog, as its configuration says; the
    API app runs them for its lifetime.  ``serve`` and ``demo`` both start here."""
    import httpx

    from gpuwarden.metrics.scraper import Scraper

    scrape = cp.config.scrape
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=scrape.concurrency,
                                                   max_keepalive_connections=scrape.concurrency))
    scraper = Scraper(cp.targets, client, cp.store, interval=scrape.interval,
                      timeout=scrape.timeout, concurrency=scrape.concurrency)
    cp.scraper = scraper
    if cp.config.watchdog.enabled:
        from gpuwarden.services.executor import ControlPlaneExecutor
        from gpuwarden.watchdog import Watchdog

        cp.watchdog = Watchdog(cp.db, cp.config, lambda: scraper.states,
                               executor=ControlPlaneExecutor(cp))


def run_serve(options: ServeOptions) -> None:
    import uvicorn

    from gpuwarden.api.app import create_app

    settings = Settings()
    path = options.config or settings.config
    config = load_config(path) if path else ServeConfig()
    if not 0 < options.port < 65536:
        raise GpuwardenError(f"--port {options.port} is not a TCP port; use 1-65535")
    sock = bind(options.host, options.port)
    cp = open_control_plane(config, settings.home)
    attach_background(cp)
    app = create_app(cp)
    url = f"http://{url_host(options.host)}:{sock.getsockname()[1]}"
    admin = cp.tokens.ensure_admin()
    nodes = len(config.nodes)
    print(f"gpuwarden serve: {url} — {nodes} node(s) in cluster {config.cluster!r}, "
          f"store {config.store.kind}, data in {settings.home}", flush=True)
    print(f"API: {url}/api/v1 (OpenAPI {url}/api/v1/openapi.json)", flush=True)
    if not nodes:
        print("no nodes configured: pass --config FILE with a nodes: list", flush=True)
    if admin is not None:
        print(f"sign in: {url}/login?token={admin}", flush=True)
        print("first start: an admin token was created. It is shown this once; store it now:",
              flush=True)
        print(admin, flush=True)
    else:
        print(f"sign in: {url}/signin with an API token (`gpuwarden token create --role viewer`)",
              flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        cp.store.close()
        cp.db.close()
