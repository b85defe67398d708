"""``gpuwarden serve``: wire configuration, state, store, scraper and API, then serve."""

from __future__ import annotations

import contextlib
import gc
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

    from gpuwarden.metrics import writer_of
    from gpuwarden.metrics.scraper import Scraper

    scrape = cp.config.scrape
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=scrape.concurrency,
                                                   max_keepalive_connections=scrape.concurrency))
    scraper = Scraper(cp.targets, client, writer_of(cp.store), interval=scrape.interval,
                      timeout=scrape.timeout, concurrency=scrape.concurrency)
    cp.scraper = scraper
    if cp.config.watchdog.enabled:
        from gpuwarden.services.executor import ControlPlaneExecutor
        from gpuwarden.watchdog import Watchdog

        cp.watchdog = Watchdog(cp.db, cp.config, lambda: scraper.states,
                               executor=ControlPlaneExecutor(cp))
    # one outbox, one delivery loop: the watchdog's; without it reclaim's, else the job
    # reports' (their end-of-job messages do not need the watchdog)
    notifier = cp.watchdog.notifier if cp.watchdog is not None else None
    if notifier is None and (cp.config.reclaim.enabled or cp.config.reports.enabled):
        from gpuwarden.watchdog.notify import Notifier

        notifier = Notifier(
            cp.db, cp.config.watchdog.notify_urls(), owners=cp.config.owners.url_for,
            rate_limit_per_minute=cp.config.watchdog.rate_limit_per_minute)
    if cp.config.reclaim.enabled:  # jobs (reclaim.jobs) and nodes (clusters' autostop)
        from gpuwarden.reclaim import Reclaimer
        from gpuwarden.services.executor import ControlPlaneExecutor

        assert notifier is not None
        cp.reclaim = Reclaimer(cp.db, cp.config, cp.store, lambda: scraper.states,
                               executor=ControlPlaneExecutor(cp, actor="reclaim"),
                               notifier=notifier, delivers=cp.watchdog is None,
                               views=(lambda: cp.watchdog.last_view) if cp.watchdog else None)
        scraper.subscribers.append(cp.reclaim.peaks.observe)
    if cp.config.reports.enabled:
        from gpuwarden.services.jobreport import JobReports

        cp.reports = JobReports(cp, notifier,
                                delivers=cp.watchdog is None and cp.reclaim is None)
    if cp.config.checks.every is not None:  # idle nodes' checks, each node held by a job
        from gpuwarden.services.checks import PeriodicChecks

        cp.periodic_checks = PeriodicChecks(cp)


def run_serve(options: ServeOptions) -> None:
    """Serve until asked to stop: Ctrl-C, SIGTERM, SIGHUP and a closed stdout all take the
    same graceful path (uvicorn's shutdown, then the stores close and the runtime file goes)."""
    from gpuwarden import runtime
    from gpuwarden.stopping import Stop, stop_requests

    with stop_requests() as stopper, contextlib.suppress(Stop):
        try:
            _serve(options, stopper)
        finally:
            runtime.withdraw(Settings().home)  # only this process's own file


def _serve(options: ServeOptions, stopper) -> None:  # stopper: gpuwarden.stopping.Stopper
    import getpass

    from gpuwarden import runtime
    from gpuwarden.api.app import create_app
    from gpuwarden.stopping import make_server

    say = stopper.say
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
    # the CLI on this machine finds this process through its runtime file, with an admin
    # token of its own (replacing the previous run's); a wildcard address is reached locally
    try:
        local_name = f"local CLI ({getpass.getuser()})"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        local_name = "local CLI"
    cp.tokens.delete_named(local_name)
    admin = cp.tokens.ensure_admin()
    local_token = cp.tokens.create("admin", local_name)
    local_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(options.host, options.host)
    runtime.publish(settings.home, "serve",
                    f"http://{url_host(local_host)}:{sock.getsockname()[1]}", local_token)
    # what the scraper will scrape: the config's nodes and those `gpuwarden up` registered
    inventory = cp.inventory.nodes()
    clusters = sorted({n.cluster for n in inventory} | {config.cluster})
    say(f"gpuwarden serve: {url} — {len(inventory)} node(s) in "
        f"{'cluster' if len(clusters) == 1 else 'clusters'} "
        f"{', '.join(repr(c) for c in clusters)}, store {config.store.kind}, "
        f"data in {settings.home}", flush=True)
    say(f"API: {url}/api/v1 (OpenAPI {url}/api/v1/openapi.json)", flush=True)
    if not inventory:
        say("no nodes yet: pass --config FILE with a nodes: list, or bring a cluster up "
            "with `gpuwarden up`", flush=True)
    if admin is not None:
        say(f"sign in: {url}/login?token={admin}", flush=True)
        say("first start: an admin token was created. It is shown this once; store it now:",
            flush=True)
        say(admin, flush=True)
    else:
        say(f"sign in: {url}/signin with an API token (`gpuwarden token create --role viewer`)",
            flush=True)
    gc.freeze()  # setup's objects (modules, app, loaded store) skip every GC
    # a graceful stop waits for open requests (the UI's event streams) this long, no more
    server = make_server(app, cp.closing, log_level="warning", access_log=False,
                         timeout_graceful_shutdown=5)
    stopper.server = server
    try:
        server.run(sockets=[sock])
    finally:
        runtime.withdraw(settings.home)
        cp.store.close()
        cp.db.close()
