"""The scraper: one asyncio task per node reads its ``/api/v1/snapshot`` on schedule (with
jitter, a per-target timeout, bounded concurrency and backoff for dead nodes), keeps the
latest snapshot in memory and hands samples to one writer task that appends them to the
store in batches.  A slow or dead node never delays the others.

The hot path, per node per interval, is built for 1,000 nodes on a fraction of a core
(``bench/bench_control.py``; figures per scrape of a node of 8 GPUs, ~310 samples, on the
bench machine):

* HTTP: one :class:`~gpuwarden.metrics.http.NodeFetcher` (injected, or built from
  ``client``): :class:`~gpuwarden.metrics.http.FastHttpClient` (asyncio protocol, keep-alive)
  for plain ``http://`` targets (the controller's Slurm summary too); httpx (``asyncio`` +
  ``httpx``, as everywhere else in gpuwarden) for https and for targets behind an
  environment proxy.  httpx costs 2.4-3.4 ms of CPU per snapshot GET, the protocol ~0.12 ms.
  Either way a body is capped (``Limits.max_bytes``, 4 MiB) and cut off, not buffered, past
  the cap, and one deadline (``timeout``) covers the whole exchange, a slow drip included.
* JSON: orjson, ~75 µs for the ~15 kB snapshot against ~270 µs for ``json.loads``.
* Checks: :func:`~gpuwarden.gpu.wire.decode_snapshot` parses and validates the body once
  (size cap before parsing, types, physical ranges, unique GPU indices, cardinality caps);
  a refused snapshot stores nothing, leaves the node's last good snapshot in place and marks
  the node ``bad data`` with the reason (``TargetState.bad_data``, counted in
  ``garbage_total``).  Measured with timeit on a dev machine, 8-GPU snapshot (14 kB):
  parse ~32 µs, checks ~80 µs, groups of the checked snapshot ~20 µs (unchecked, testing
  types themselves, ~33 µs): ~135 µs in all against ~65 µs unchecked, +0.5 % of one core
  at 1,000 nodes every 15 s.
* Samples: :func:`~gpuwarden.metrics.ingest.snapshot_groups` (the series of the node's own
  ``/metrics``, by the same function: most of a GPU's readings in one group, no object per
  sample) into ``append_groups`` of a store that has it: ~0.15 ms + ~0.4 ms to store,
  against ~1.0 ms + ~1.5 ms as Sample objects through ``append``.
* Slurm: the controller's summary (``/api/v1/slurm``) is decoded once per Slurm cycle
  (:func:`~gpuwarden.slurm.wire.decode_summary`, in a thread: tens of ms for a queue of
  10,000 jobs) into the :class:`~gpuwarden.slurm.model.SlurmSnapshot` that services, the
  watchdog and reclaim read (``TargetState.slurm``, swapped whole, never changed in place)
  and the controller's ``slurm_*`` series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from gpuwarden import __version__
from gpuwarden.bearer import read_token_file
from gpuwarden.diskspace import disk_full, is_disk_full
from gpuwarden.errors import GpuwardenError
from gpuwarden.gpu.model import DecodedSnapshot
from gpuwarden.gpu.series import SeriesGroup
from gpuwarden.gpu.wire import (
    LIMITS,
    Limits,
    SnapshotRefused,
    decode_document,
    snapshot_document,
    snapshot_of,
    version_mismatch,
)
from gpuwarden.metrics.http import (
    HttpError,
    HttpTimeout,
    NodeFetcher,
    ResponseTooLarge,
)
from gpuwarden.metrics.ingest import (
    SampleGroup,
    slurm_groups,
    snapshot_groups,
)
from gpuwarden.metrics.model import MetricsWriter, ScrapeTarget
from gpuwarden.slurm.model import SlurmSnapshot
from gpuwarden.slurm.wire import decode_summary

log = logging.getLogger(__name__)


SLURM_MAX_BYTES = 64 * 1024 * 1024  # a controller's Slurm summary (every job of the queue)


def check_slurm_summary(doc: Any) -> dict[str, Any]:
    """The controller's ``/api/v1/slurm`` document if its outline holds (an object, its
    ``queue`` counts, its jobs, nodes and partitions objects with their keys), else
    :class:`SnapshotRefused`: the check on the loop, before the document is decoded
    (:func:`~gpuwarden.slurm.wire.decode_summary`, in a thread) into what readers read."""
    if type(doc) is not dict:
        raise SnapshotRefused("the Slurm summary is not an object")
    queue = doc.get("queue", {})
    if type(queue) is not dict or not all(type(v) is int for v in queue.values()):
        raise SnapshotRefused("queue: not an object of counts")
    for key, ident in (("jobs", "job_id"), ("nodes", "name"), ("partitions", "name")):
        items = doc.get(key, [])
        if type(items) is not list:
            raise SnapshotRefused(f"{key}: not a list")
        for i, item in enumerate(items):
            if type(item) is not dict or type(item.get(ident)) not in (str, int):
                raise SnapshotRefused(f"{key}[{i}]: not an object with a {ident}")
    return doc


def _same(a: ScrapeTarget, b: ScrapeTarget) -> bool:
    """Whether two targets are scraped the same way (another $/hr or inventory field of the
    node does not restart its loop nor forget what its scrapes found)."""
    return (a.name, a.url, a.token_file, a.role) == (b.name, b.url, b.token_file, b.role)


@dataclass(frozen=True)
class TargetState:
    """What the scraper knows of one node after its latest scrape: one immutable value, a
    new one swapped in (``Scraper.states[name]``) after each scrape, so a reader holds a
    consistent node and a view cache can key on identity."""

    target: ScrapeTarget
    up: bool = False
    last_scrape: float = 0.0  # when the last attempt ended
    last_success: float = 0.0
    duration: float = 0.0
    error: str | None = None
    consecutive_failures: int = 0
    scrapes_total: int = 0
    failures_total: int = 0
    garbage_total: int = 0  # snapshots refused as bad data
    bad_data: str | None = None  # why the latest snapshot was refused (None: it was not)
    snapshot: DecodedSnapshot | None = None  # the last good snapshot (gpu.wire decoded it)
    # controller only: its Slurm snapshot (slurm.wire decoded it), one immutable value
    slurm: SlurmSnapshot | None = None
    slurm_error: str | None = None
    # the node's gpuwarden is not this control plane's (None: it is): gpu.wire.version_mismatch
    version_mismatch: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.snapshot, dict):  # a document (benches, tests): decoded here
            object.__setattr__(self, "snapshot", snapshot_document(self.snapshot))
        if isinstance(self.slurm, dict):  # a /api/v1/slurm document (tests): decoded here
            object.__setattr__(self, "slurm", decode_summary(self.slurm))


@dataclass
class ScheduleStats:
    """How late scrapes start against their schedule: the sign of a scraper that cannot
    keep up (the ingest lag alone cannot show it)."""

    lateness_seconds: float = 0.0  # moving average
    max_lateness_seconds: float = 0.0  # since the last read of /status


@dataclass
class IngestStats:
    batches: int = 0
    samples: int = 0
    failed_batches: int = 0
    lag_seconds: float = 0.0  # age of the oldest sample when its batch was stored
    queued: int = 0
    write_error: str | None = None  # why the last batch was not stored; None once one is


class _TokenCache:
    def __init__(self) -> None:
        self._cache: dict[Path, tuple[float, str]] = {}

    def get(self, path: Path) -> str:
        mtime = path.stat().st_mtime
        cached = self._cache.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, read_token_file(path, f"token_file {path}"))
            self._cache[path] = cached
        return cached[1]


@dataclass
class Scraper:
    targets: Callable[[], Sequence[ScrapeTarget]]
    client: httpx.AsyncClient
    # where what is scraped is stored: the embedded store's writer; None with Prometheus or
    # VictoriaMetrics, which scrape the nodes themselves (nothing is queued then)
    store: MetricsWriter | None
    interval: float = 15.0
    timeout: float = 5.0
    concurrency: int = 64
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    max_backoff: float = 120.0
    flush_every: float = 1.0
    fast_http: bool = True  # plain-http targets use FastHttpClient (see the module doc)
    # how GETs reach the nodes (built from client and fast_http when not given)
    fetcher: NodeFetcher | None = None
    limits: Limits = LIMITS  # what a node's snapshot may hold (gpu.wire)
    stop_timeout: float = 3.0  # seconds a stop waits for the batch being stored
    # called with each node's state right after a scrape published it, on the event loop
    # (reclaim's running peaks, gpuwarden.reclaim.peaks); one that raises is logged
    subscribers: list[Callable[[TargetState], None]] = field(default_factory=list)
    expected_version: str = __version__  # every node's gpuwarden must be this one

    def __post_init__(self) -> None:
        self.states: dict[str, TargetState] = {}
        self.ingest = IngestStats()
        self.schedule = ScheduleStats()
        self.version = 0  # bumped after every scrape: the SSE stream watches it
        self.changed = asyncio.Event()
        self._queue: list[tuple[float, list[SeriesGroup]]] = []
        self._fetch = self.fetcher or NodeFetcher(self.client, fast=self.fast_http,
                                                  max_idle=max(self.concurrency, 1024))
        self._node_labels: dict[str, dict[str, str]] = {}
        self._slurm_stored: dict[str, float] = {}  # controller -> cycle whose series are queued
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sem = asyncio.Semaphore(self.concurrency)
        self._tokens = _TokenCache()
        self._stop = asyncio.Event()
        self._abandoned = False  # a stop gave up on the writer: store nothing more
        self._failure_logged = -60.0  # monotonic time of the last "cannot write" log line

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer(), name="scrape-writer")
        try:
            while not self._stop.is_set():
                self._reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=max(1.0, self.interval))
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._stop.set()
            await self._finish_writer(writer)
            self._fetch.close()

    async def _finish_writer(self, writer: asyncio.Task[None]) -> None:
        """Let the writer store what is queued, for ``stop_timeout`` seconds at most; past
        that, the batch in flight is abandoned (the store's ``interrupt``) and nothing more
        is stored, so a stop takes seconds whatever a node sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(writer), self.stop_timeout)
            return
        self._abandoned = True
        interrupt = self.store.interrupt if self.store is not None else None
        log.warning("stopping: storing the last batch took over %g s; it is abandoned%s",
                    self.stop_timeout, "" if interrupt else " (the store cannot be "
                    "interrupted: waiting for it)")
        if interrupt is not None:
            interrupt()
        await asyncio.gather(writer, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    def _reconcile(self) -> None:
        """Start a loop for each new target, stop the loops of removed ones."""
        wanted = {t.name: t for t in self.targets()}
        for name in list(self._tasks):
            if name not in wanted or not _same(self.states[name].target, wanted[name]):
                self._tasks.pop(name).cancel()
                if name not in wanted:
                    self.states.pop(name, None)
        for name, target in wanted.items():
            if name not in self._tasks:
                state = self.states.get(name)
                if state is None or not _same(state.target, target):
                    self.states[name] = TargetState(target)
                self._tasks[name] = asyncio.create_task(self._loop(target), name=f"scrape-{name}")

    # -- scraping --------------------------------------------------------------------------

    async def _loop(self, target: ScrapeTarget) -> None:
        # spread the first scrapes over the interval so 1,000 nodes do not arrive at once
        await asyncio.sleep(self.rng.uniform(0, min(self.interval, 2.0)))
        first = True
        while True:
            started = time.monotonic()
            await self.scrape_once(target)
            state = self.states.get(target.name)
            delay = self.interval
            if state is not None and state.consecutive_failures:
                delay = min(self.max_backoff,
                            self.interval * 2 ** min(state.consecutive_failures - 1, 6))
                delay *= self.rng.uniform(0.95, 1.05)
            elif first:
                # the first scrapes all land within 2 s (data soon after start); from the
                # second on, each target keeps its own phase spread over the interval, as
                # Prometheus spreads its targets, so 1,000 nodes are ~67 scrapes a second
                # rather than a burst of 1,000 every interval
                delay *= self.rng.uniform(0.05, 1.0)
            else:
                delay *= self.rng.uniform(0.95, 1.05)
            first = False
            due = started + delay
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self._late(time.monotonic() - due)

    def _late(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.schedule.lateness_seconds += (seconds - self.schedule.lateness_seconds) * 0.05
        self.schedule.max_lateness_seconds = max(self.schedule.max_lateness_seconds, seconds)

    async def scrape_once(self, target: ScrapeTarget) -> TargetState:
        last = self.states.get(target.name) or TargetState(target)
        queued = time.monotonic()
        async with self._sem:
            self._late(time.monotonic() - queued)
            began = time.perf_counter()
            error: str | None = None
            bad: str | None = None
            groups: list[SeriesGroup] = []
            snapshot: DecodedSnapshot | None = None
            try:
                status, body = await self._get(target, "/api/v1/snapshot",
                                               self.limits.max_bytes)
                if status != 200:
                    error = f"HTTP {status}"
                    if status == 401:
                        error += " (the node refused the token: check token_file)"
                else:
                    doc = decode_document(body, self.clock(), self.limits)
                    if self.store is not None:  # (Prometheus scrapes the node itself)
                        groups = snapshot_groups(target.name, doc, checked=True)
                    snapshot = snapshot_of(doc)
            except SnapshotRefused as exc:
                bad = exc.reason
            except ResponseTooLarge as exc:
                bad = f"the snapshot is over {exc.limit} bytes (the cap; not read further)"
            except (httpx.TimeoutException, HttpTimeout, TimeoutError):
                error = f"timeout after {self.timeout:g} s"
            except HttpError as exc:
                error = str(exc)[:300]
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
            except OSError as exc:  # token file gone (stat)
                error = f"token_file: {exc.strerror}"
            except GpuwardenError as exc:  # token file unreadable, empty or too short
                error = str(exc)[:300]
            if bad is not None:
                snapshot, groups = None, []
                error = f"bad data: {bad}"[:500]
            duration = time.perf_counter() - began
            slurm, slurm_error = last.slurm, last.slurm_error
            if error is None and target.role == "controller":
                slurm, slurm_error, more = await self._scrape_slurm(target, last.slurm)
                groups += more
        now = self.clock()
        seen = dict(target=target, scrapes_total=last.scrapes_total + 1, last_scrape=now,
                    duration=duration, bad_data=bad, slurm=slurm, slurm_error=slurm_error,
                    garbage_total=last.garbage_total + (bad is not None))
        if error is None:
            mismatch = None
            if snapshot is not None:
                mismatch = version_mismatch(snapshot.node.version, self.expected_version)
                if mismatch is not None and mismatch != last.version_mismatch:
                    log.warning("node %s: %s", target.name, mismatch)
            state = replace(last, **seen, up=True, error=None, consecutive_failures=0,
                            last_success=now, snapshot=snapshot, version_mismatch=mismatch)
        else:
            if last.up or last.consecutive_failures == 0:
                log.warning("node %s: scrape failed: %s", target.name, error)
            state = replace(last, **seen, up=False, error=error,
                            consecutive_failures=last.consecutive_failures + 1,
                            failures_total=last.failures_total + 1)
        self.states[target.name] = state  # the one swap readers see
        labels = self._node_labels.get(target.name)
        if labels is None:
            labels = self._node_labels[target.name] = {"node": target.name}
        groups.append(SampleGroup(labels, now, ("up", "scrape_duration_seconds"),
                                  (1.0 if error is None else 0.0, duration)))
        for subscriber in self.subscribers:
            try:
                subscriber(state)
            except Exception:
                log.exception("node %s: a subscriber to its scrape failed", target.name)
        if self.store is not None:
            self._queue.append((now, groups))
        self.version += 1
        self.changed.set()
        return state

    async def _get(self, target: ScrapeTarget, path: str, max_body: int) -> tuple[int, bytes]:
        """Status and body of one GET through the fetcher (:class:`NodeFetcher`): at most
        ``max_body`` bytes within ``timeout`` seconds in all."""
        return await self._fetch.get(target.url, path, self._headers(target), self.timeout,
                                     max_body)

    async def _scrape_slurm(self, target: ScrapeTarget, held: SlurmSnapshot | None
                            ) -> tuple[SlurmSnapshot | None, str | None, list[SeriesGroup]]:
        """The controller's Slurm snapshot (``held`` again when its cycle has not changed),
        why there is none or it is old (None: fresh), and the ``slurm_*`` series of a Slurm
        cycle not stored before (none when the summary is refused)."""
        groups: list[SeriesGroup] = []
        try:
            status, body = await self._get(target, "/api/v1/slurm", SLURM_MAX_BYTES)
            if status == 200:
                doc = check_slurm_summary(orjson.loads(body))
                if held is None or doc.get("collected_at") != held.collected_at:
                    # a queue of 10,000 jobs takes tens of ms to decode: not on the loop
                    held, groups = await asyncio.to_thread(self._decode_slurm, target, doc)
                return held, None, groups
            if status == 404:
                return None, "the node runs no Slurm collector", groups
            return held, f"HTTP {status}", groups
        except SnapshotRefused as exc:
            return None, f"bad data: {exc.reason}"[:500], groups
        except (httpx.TimeoutException, HttpTimeout, TimeoutError):
            return held, f"timeout after {self.timeout:g} s", groups
        except (httpx.HTTPError, HttpError, ValueError, OSError) as exc:
            return held, f"{type(exc).__name__}: {exc}"[:300], groups

    def _decode_slurm(self, target: ScrapeTarget,
                      doc: dict[str, Any]) -> tuple[SlurmSnapshot, list[SeriesGroup]]:
        """The snapshot of a new Slurm cycle's document and its ``slurm_*`` series (none
        when that cycle's are stored already, or there is no writer to store them), or
        :class:`SnapshotRefused`."""
        snap = decode_summary(doc)
        if self.store is None or snap.collected_at == self._slurm_stored.get(target.name):
            return snap, []
        groups = slurm_groups(target.name, snap)
        self._slurm_stored[target.name] = snap.collected_at
        return snap, groups

    def _headers(self, target: ScrapeTarget) -> dict[str, str]:
        if target.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self._tokens.get(target.token_file)}"}

    # -- writing ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        while not self._abandoned:
            stopping = self._stop.is_set()
            await self.flush()
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.flush_every)

    def _write_failed(self, exc: Exception, count: int) -> None:
        """A batch the store refused is dropped and counted; a full disk is a state that
        ``/status`` shows, logged one line a minute (a traceback only for other errors,
        once a minute too), and the next batch that is stored ends it."""
        self.ingest.failed_batches += 1
        if self._abandoned:
            log.warning("stopping: %d samples were not stored", count)
            return
        path = getattr(self.store, "path", None)
        full = is_disk_full(exc)
        reason = disk_full(path) if full and path is not None else (
            "disk full" if full else f"{type(exc).__name__}: {exc}")
        self.ingest.write_error = f"store cannot write: {reason}"
        now = time.monotonic()
        if now - self._failure_logged < 60:
            return
        self._failure_logged = now
        log.warning("%s; %d samples dropped (%d batches so far)", self.ingest.write_error,
                    count, self.ingest.failed_batches, exc_info=None if full else exc)

    async def flush(self) -> None:
        """Store what is queued as one batch (in a thread: SQLite must not block the loop)."""
        if not self._queue or self._abandoned:
            self.ingest.queued = 0
            return
        queued, self._queue = self._queue, []
        batch = [g for _, groups in queued for g in groups]
        count = sum(len(g.names) for g in batch)
        oldest = min(t for t, _ in queued)
        if self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.append_groups, batch)
        except Exception as exc:
            self._write_failed(exc, count)
            return
        if self.ingest.write_error is not None:
            log.warning("the store writes again (%d batches were dropped)",
                        self.ingest.failed_batches)
            self.ingest.write_error = None
        self.ingest.batches += 1
        self.ingest.samples += count
        self.ingest.lag_seconds = self.clock() - oldest
        self.ingest.queued = len(self._queue)
