"""What the services work on: one object handed to the API, the agent and the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from gpuwarden.config import ServeConfig
from gpuwarden.metrics.model import MetricsStore, ScrapeTarget
from gpuwarden.metrics.scraper import Scraper
from gpuwarden.reclaim import Reclaimer
from gpuwarden.state.db import StateDB
from gpuwarden.state.inventory import Inventory
from gpuwarden.state.tokens import TokenStore
from gpuwarden.watchdog.engine import Watchdog

if TYPE_CHECKING:
    from gpuwarden.services.checks import PeriodicChecks
    from gpuwarden.services.jobreport import JobReports
    from gpuwarden.services.live import GpuPrice, LiveView, Summary
    from gpuwarden.services.waste import WasteDay
    from gpuwarden.state.inventory import Node


@dataclass(slots=True)
class Views:
    """The services' derived views, one slot each, every one keyed on what it was made of
    (each slot is swapped whole: a reader sees an old or a new pair, never a mix)."""

    # services.live: the inventory by name, with the monotonic time it was read
    inventory: tuple[float, dict[str, Node]] | None = None
    # services.live: the scraper's version the live view was built at, when, and the view
    live: tuple[int, float, LiveView] | None = None
    summary: tuple[LiveView, Summary] | None = None  # the overview's figures of a live view
    gpu_prices: tuple[LiveView, list[GpuPrice]] | None = None  # of a live view
    # services.waste: the clock() time of the last figure and the figure (None: unknown)
    waste_today: tuple[float, float | None] | None = None
    waste_day: WasteDay | None = None  # the idle minutes counted so far today
    waste_lock: threading.Lock = field(default_factory=threading.Lock)  # one refresh at once
    waste_thread: threading.Thread | None = None  # a big fleet's refresh in the background


@dataclass
class ControlPlane:
    config: ServeConfig
    db: StateDB
    store: MetricsStore
    scraper: Scraper | None = None
    watchdog: Watchdog | None = None
    reclaim: Reclaimer | None = None
    reports: JobReports | None = None  # stores each ended GPU job's summary
    periodic_checks: PeriodicChecks | None = None  # checks.every: idle nodes' checks
    client: httpx.AsyncClient | None = None  # for actions on node daemons
    clock: Callable[[], float] = time.time
    inventory: Inventory = field(init=False)
    views: Views = field(default_factory=Views)  # services' derived views
    tokens: TokenStore = field(init=False)
    # set when the server begins to stop: long-lived responses (the event stream) end, so a
    # graceful shutdown does not wait on them
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.inventory = Inventory(self.db)
        self.tokens = TokenStore(self.db)

    def http(self) -> httpx.AsyncClient:
        """The client for actions on node daemons (made on first use, in the caller's loop)."""
        if self.client is None:
            self.client = httpx.AsyncClient()
        return self.client

    def targets(self) -> list[ScrapeTarget]:
        return [n for n in self.inventory.nodes()  # each Node is a ScrapeTarget
                if n.status != "STOPPED"]  # stopped on purpose: nothing answers, nothing due
