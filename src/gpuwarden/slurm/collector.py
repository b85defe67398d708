"""The Slurm collector: one snapshot per cycle in a background thread; scrapes read it.

A cycle runs one squeue (``--states=all``: finished jobs too, while slurmctld keeps them),
one sinfo and one sdiag, one sshare (FairShare by account) unless the cluster is known to
keep no accounting, plus ``scontrol -d show job`` for GPU jobs that started since the
last cycle (a running job's GPU indices do not change, so they are cached; many new jobs at
once are read with one full ``scontrol`` call instead).

Finished jobs: with accounting (slurmdbd), one ``sacct`` every ``accounting_interval``
seconds (sooner when squeue shows a job finish that sacct has not told yet) reads the jobs
that ended since the last read, kept for ``accounting_window_s``; their records
(``source="sacct"``: exit code, signal, start/end, elapsed, GPUs from AllocTRES) replace
squeue's for the same job. Without accounting, finished jobs are squeue's, their exit codes
from ``scontrol show job`` (once per job). A failing command is recorded and counted;
nothing raises out of the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Generic, TypeVar

from gpuwarden.slurm.adapter import GpuDetail, SlurmAdapter
from gpuwarden.slurm.errors import AccountingDisabled, BadRequest, SlurmError
from gpuwarden.slurm.model import SlurmJob, SlurmSnapshot

log = logging.getLogger(__name__)

T = TypeVar("T")
JobKey = tuple[int, str | None, float | None]
ExitCode = tuple[int, int]
# errors of these commands do not make Slurm "down": the queue and nodes are still right
OPTIONAL_COMMANDS = frozenset({"sacct", "sshare"})
ACCOUNTING_PROBE_S = 600.0  # a cluster without accounting is asked again this often
SACCT_OVERLAP_S = 120.0  # each read reaches back over the previous one (clock skew, lag)
SACCT_RETRIES = 3  # reads that may look for a job squeue saw finish before sacct knows it


def _job_key(job: SlurmJob) -> JobKey:
    return (job.job_id, job.array_task_id, job.start_time)


def may_hold_gpus(job: SlurmJob, gpu_busy_nodes: frozenset[str] = frozenset()) -> bool:
    """Running, and either asked for GPUs per node or runs on a node whose GPUs are in use
    (a ``--gpus``/``--gpus-per-task`` request shows in no squeue format letter)."""
    if not job.is_running:
        return False
    if any("gpu" in t for t in (job.tres_per_node, job.tres_per_job, job.tres_per_task)):
        return True
    return any(node in gpu_busy_nodes for node in job.nodes)


class _Background(Generic[T]):
    """Runs ``fn`` in a thread; ``result()`` waits for it."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: T | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        self._value = fn()

    def result(self) -> T | None:
        self._thread.join()
        return self._value


class SlurmCollector:
    """Snapshots Slurm every ``interval`` seconds in a background thread.

    ``collect_once()`` runs one cycle in the caller's thread (tests, one-shot tools);
    ``start()``/``stop()`` drive the thread; ``latest()`` returns the newest snapshot
    (``None`` until the first cycle ends).
    """

    def __init__(
        self,
        adapter: SlurmAdapter,
        interval: float = 15.0,
        *,
        clock: Callable[[], float] = time.time,
        full_detail_threshold: int = 16,
        accounting_interval: float = 60.0,
        accounting_window_s: float = 24 * 3600.0,
        max_finished: int = 5000,
        finished_jobs: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if accounting_interval <= 0 or accounting_window_s <= 0:
            raise ValueError("accounting_interval and accounting_window_s must be positive")
        self.adapter = adapter
        self.interval = interval
        self._clock = clock
        self._full_detail_threshold = full_detail_threshold
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self._latest: SlurmSnapshot | None = None
        self._error_counts: dict[str, int] = {}
        self._detail_cache: dict[JobKey, GpuDetail] = {}
        self._exit_cache: dict[JobKey, ExitCode] = {}
        self._last_success: float | None = None
        self.accounting_interval = accounting_interval
        self.accounting_window_s = accounting_window_s
        self.max_finished = max_finished
        self.finished_jobs = finished_jobs
        """Read sacct and finished jobs' exit codes (off: squeue's records as they are)."""
        self._accounting: bool | None = None  # None: not asked yet
        self._accounting_checked = 0.0
        self._sacct_read_at: float | None = None  # the start of the last good read
        self._sacct_tried = float("-inf")
        self._finished: dict[int, SlurmJob] = {}  # sacct's records by raw job id
        self._looked_for: dict[int, int] = {}  # job id -> sacct reads that missed it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- thread ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="slurm-collector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout if timeout is not None else self.adapter.timeout * 4 + 5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def latest(self) -> SlurmSnapshot | None:
        return self._latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
            except Exception:  # never let the thread die
                log.exception("Slurm collector cycle failed")
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.0))

    # ---- one cycle ------------------------------------------------------------------
    def collect_once(self, *, accounting: bool = True) -> SlurmSnapshot:
        """Run one cycle, store it as the latest snapshot and return it. ``accounting``
        False skips sacct this time (a refresh right after an action: the queue and nodes
        matter, finished jobs' records follow in the next cycle)."""
        with self._cycle_lock:
            return self._cycle(accounting)

    def _cycle(self, accounting: bool = True) -> SlurmSnapshot:
        started = time.monotonic()
        collected_at = self._clock()
        errors: dict[str, str] = {}
        durations: dict[str, float] = {}

        def timed(command: str, fn: Callable[[], T]) -> T | None:
            t0 = time.monotonic()
            try:
                return fn()
            except SlurmError as exc:
                errors[command] = str(exc)
            except Exception as exc:  # a parser bug must not stop the collector
                log.exception("unexpected error from %s", command)
                errors[command] = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                durations[command] = durations.get(command, 0.0) + time.monotonic() - t0
            return None

        # sinfo and sdiag are small: run them beside the (big) squeue, not after it.
        sinfo = _Background(lambda: timed("sinfo", self.adapter.nodes))
        sdiag = _Background(lambda: timed("sdiag", self.adapter.scheduler_stats))
        sshare = (_Background(lambda: timed("sshare", self._fairshare))
                  if self._accounting is not False else None)
        jobs = timed("squeue", self.adapter.jobs)
        info = sinfo.result()
        stats = sdiag.result()
        fairshare = sshare.result() if sshare is not None else None
        if jobs is not None and not self.adapter.shape.has_gpu_detail:
            busy = frozenset(n.name for n in info.nodes if n.gpus_alloc) if info else frozenset()
            jobs = self._with_gpu_detail(jobs, busy, timed)
        listed = frozenset(j.job_id for j in jobs) if jobs is not None else frozenset()
        if jobs is not None and self.finished_jobs:
            if accounting:
                self._read_accounting(jobs, collected_at, timed)
            jobs = self._merge_finished(jobs, collected_at, timed)

        with self._lock:
            for command in errors:
                self._error_counts[command] = self._error_counts.get(command, 0) + 1
            counts = dict(self._error_counts)
            essential = set(errors) - OPTIONAL_COMMANDS
            if not essential:
                self._last_success = collected_at
            last_success = self._last_success
        snapshot = SlurmSnapshot(
            collected_at=collected_at,
            duration_s=time.monotonic() - started,
            up=not essential,
            jobs=tuple(jobs or ()),
            nodes=info.nodes if info else (),
            partitions=info.partitions if info else (),
            stats=stats,
            errors=MappingProxyType(errors),
            error_counts=MappingProxyType(counts),
            command_durations=MappingProxyType(durations),
            last_success=last_success,
            accounting=bool(self._accounting) and "sacct" not in errors,
            accounting_window_s=self.accounting_window_s if self._accounting else None,
            listed=listed,
            fairshare=MappingProxyType(fairshare or {}),
            interval_s=self.interval,
        )
        self._latest = snapshot
        return snapshot

    def _fairshare(self) -> dict[str, float]:
        try:
            return self.adapter.fairshare()
        except AccountingDisabled:
            self._accounting = False  # configuration, not an error; sacct probes again
            return {}

    # ---- finished jobs ----------------------------------------------------------------
    def _read_accounting(self, queue: list[SlurmJob], now: float,
                         timed: Callable[[str, Callable[[], list[SlurmJob]]],
                                         list[SlurmJob] | None]) -> None:
        """One sacct read when due: every ``accounting_interval``, or sooner for jobs
        squeue shows finished that sacct has not told yet (a few reads each, no more)."""
        if self._accounting is False and now - self._accounting_checked < ACCOUNTING_PROBE_S:
            return
        unseen = [j.job_id for j in queue if j.is_finished and j.job_id not in self._finished
                  and self._looked_for.get(j.job_id, 0) < SACCT_RETRIES]
        due = now - self._sacct_tried >= self.accounting_interval
        if not due and not (unseen and self._accounting):
            return
        start = (now - self.accounting_window_s if self._sacct_read_at is None
                 else max(self._sacct_read_at - SACCT_OVERLAP_S, now - self.accounting_window_s))
        self._sacct_tried = now
        self._accounting_checked = now
        disabled = False

        def read() -> list[SlurmJob]:
            nonlocal disabled
            try:
                return self.adapter.finished_jobs(start,
                                                  timeout=max(self.adapter.timeout, 30.0))
            except AccountingDisabled:
                disabled = True  # configuration, not an error
                return []

        found = timed("sacct", read)
        if disabled:
            self._accounting = False
            self._finished.clear()
            return
        if found is None:
            return  # the error is counted; keep what earlier reads found
        self._accounting = True
        self._sacct_read_at = now
        for job in found:
            self._finished[job.job_id] = job
        for job_id in unseen:
            if job_id not in self._finished:
                self._looked_for[job_id] = self._looked_for.get(job_id, 0) + 1
        horizon = now - self.accounting_window_s
        kept = [j for j in self._finished.values() if (j.end_time or now) >= horizon]
        if len(kept) > self.max_finished:
            kept = sorted(kept, key=lambda j: j.end_time or 0.0)[-self.max_finished:]
        self._finished = {j.job_id: j for j in sorted(kept, key=lambda j: j.job_id)}
        live = {j.job_id for j in queue}
        self._looked_for = {k: v for k, v in self._looked_for.items() if k in live}

    def _merge_finished(self, queue: list[SlurmJob], now: float,
                        timed: Callable[[str, Callable[[], dict[int, ExitCode]]],
                                        dict[int, ExitCode] | None]) -> list[SlurmJob]:
        """squeue's jobs, a finished one replaced by sacct's record of it, then the jobs
        sacct knows that squeue no longer lists. A finished job only squeue knows gets its
        exit code from scontrol (asked once per job)."""
        finished = self._finished if self._accounting else {}
        out: list[SlurmJob] = []
        listed: set[int] = set()
        missing: list[SlurmJob] = []
        for job in queue:
            if job.is_finished:
                record = finished.get(job.job_id)
                if record is not None:
                    # once: the tasks of an array cancelled while pending share one id
                    # in squeue and one record (7_[0-2]) in sacct
                    if job.job_id not in listed:
                        out.append(record)
                    listed.add(job.job_id)
                    continue
                if job.exit_code is None and _job_key(job) not in self._exit_cache:
                    missing.append(job)
            listed.add(job.job_id)
            out.append(job)
        out.extend(j for j in finished.values() if j.job_id not in listed)
        wanted = {_job_key(j) for j in queue if j.is_finished}
        cache = {k: v for k, v in self._exit_cache.items() if k in wanted}
        if missing:
            if len(missing) > self._full_detail_threshold:
                found = timed("scontrol", self.adapter.job_exit_codes) or {}
            else:
                found = {}
                for job in missing:
                    one = timed("scontrol", lambda j=job: self._one_exit_code(j.job_id))
                    found.update(one or {})
            for job in missing:
                if job.job_id in found:
                    cache[_job_key(job)] = found[job.job_id]
        self._exit_cache = cache
        if not cache:
            return out
        return [replace(j, exit_code=cache[k][0], signal=cache[k][1])
                if j.source == "squeue" and j.is_finished and j.exit_code is None
                and (k := _job_key(j)) in cache else j
                for j in out]

    def _one_exit_code(self, job_id: int) -> dict[int, ExitCode]:
        try:
            return self.adapter.job_exit_codes(job_id)
        except BadRequest:
            return {}  # purged between squeue and scontrol

    def _with_gpu_detail(
        self,
        jobs: list[SlurmJob],
        gpu_busy_nodes: frozenset[str],
        timed: Callable[[str, Callable[[], dict[int, GpuDetail]]], dict[int, GpuDetail] | None],
    ) -> list[SlurmJob]:
        gpu_jobs = [j for j in jobs if j.state == "RUNNING" and may_hold_gpus(j, gpu_busy_nodes)]
        wanted = {_job_key(j) for j in gpu_jobs}
        cache = {k: v for k, v in self._detail_cache.items() if k in wanted}
        missing = [j for j in gpu_jobs if _job_key(j) not in cache]
        if len(missing) > self._full_detail_threshold:
            found = timed("scontrol", self.adapter.job_gpu_details) or {}
            for job in missing:
                if job.job_id in found:
                    cache[_job_key(job)] = found[job.job_id]
        else:
            for job in missing:
                detail = timed("scontrol", lambda j=job: self._one_detail(j.job_id))
                if detail is not None and job.job_id in detail:
                    cache[_job_key(job)] = detail[job.job_id]
        self._detail_cache = cache
        if not cache:
            return jobs
        return [replace(j, gpu_detail=cache[_job_key(j)])
                if j.state == "RUNNING" and _job_key(j) in cache else j
                for j in jobs]

    def _one_detail(self, job_id: int) -> dict[int, GpuDetail]:
        try:
            return self.adapter.job_gpu_details(job_id)
        except BadRequest:
            return {}  # finished between squeue and scontrol
