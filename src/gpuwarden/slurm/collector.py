"""The Slurm collector: one snapshot per cycle in a background thread; scrapes read it.

A cycle runs one squeue, one sinfo and one sdiag, plus ``scontrol -d show job`` for GPU
jobs that started since the last cycle (a running job's GPU indices do not change, so they
are cached; many new jobs at once are read with one full ``scontrol`` call instead).
A failing command is recorded and counted; nothing raises out of the thread.
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
from gpuwarden.slurm.errors import BadRequest, SlurmError
from gpuwarden.slurm.model import SlurmJob, SlurmSnapshot

log = logging.getLogger(__name__)

T = TypeVar("T")
JobKey = tuple[int, str | None, float | None]


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
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.adapter = adapter
        self.interval = interval
        self._clock = clock
        self._full_detail_threshold = full_detail_threshold
        self._lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self._latest: SlurmSnapshot | None = None
        self._error_counts: dict[str, int] = {}
        self._detail_cache: dict[JobKey, GpuDetail] = {}
        self._last_success: float | None = None
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
    def collect_once(self) -> SlurmSnapshot:
        """Run one cycle, store it as the latest snapshot and return it."""
        with self._cycle_lock:
            return self._cycle()

    def _cycle(self) -> SlurmSnapshot:
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
        jobs = timed("squeue", self.adapter.jobs)
        info = sinfo.result()
        stats = sdiag.result()
        if jobs is not None and not self.adapter.shape.has_gpu_detail:
            busy = frozenset(n.name for n in info.nodes if n.gpus_alloc) if info else frozenset()
            jobs = self._with_gpu_detail(jobs, busy, timed)

        with self._lock:
            for command in errors:
                self._error_counts[command] = self._error_counts.get(command, 0) + 1
            counts = dict(self._error_counts)
            if not errors:
                self._last_success = collected_at
            last_success = self._last_success
        snapshot = SlurmSnapshot(
            collected_at=collected_at,
            duration_s=time.monotonic() - started,
            up=not errors,
            jobs=tuple(jobs or ()),
            nodes=info.nodes if info else (),
            partitions=info.partitions if info else (),
            stats=stats,
            errors=MappingProxyType(errors),
            error_counts=MappingProxyType(counts),
            command_durations=MappingProxyType(durations),
            last_success=last_success,
        )
        self._latest = snapshot
        return snapshot

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
