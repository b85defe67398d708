"""The node's background poller: reads the GPU source every ``interval`` seconds and keeps
the latest :class:`NodeSnapshot`.  Scrapes read that snapshot and never touch NVML."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gpuwarden.gpu.model import GpuPoll, GpuSource, SourceHealth
from gpuwarden.node.jobs import AllocationProvider, JobRef, ProcJobMapper, merge_jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CollectorStats:
    polls_total: int
    poll_failures_total: int  # polls that raised (a bug or an unexpected error)
    last_duration_seconds: float
    last_success_timestamp: float  # 0 before the first successful poll
    errors_total: Mapping[str, int]  # NVML return code -> failed calls since start
    interval_seconds: float


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    hostname: str
    poll: GpuPoll
    jobs: Mapping[int, tuple[JobRef, ...]]  # GPU index -> jobs holding it
    stats: CollectorStats
    started_at: float = field(default=0.0)
    hostname_label: str = "Hostname"  # the GPU series' host label (gpu.series.HOSTNAME_LABELS)

    def health(self, now: float) -> SourceHealth:
        """Honest health: the source's own, or stale when polls stopped succeeding."""
        stale_after = max(3 * self.stats.interval_seconds, 15.0)
        if self.stats.last_success_timestamp and now - self.stats.last_success_timestamp > (
            stale_after
        ):
            age = now - self.stats.last_success_timestamp
            return SourceHealth("degraded", f"no successful GPU poll for {age:.0f} s")
        return self.poll.health


class GpuPoller:
    def __init__(
        self,
        source: GpuSource,
        *,
        hostname: str,
        hostname_label: str = "Hostname",
        interval: float = 5.0,
        mapper: ProcJobMapper | None = None,
        allocations: AllocationProvider | None = None,
        before_poll: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("--interval must be greater than 0")
        self.source = source
        self.hostname = hostname
        self.hostname_label = hostname_label
        self.interval = interval
        self._mapper = mapper or ProcJobMapper()
        self._allocations = allocations
        self._before_poll = before_poll
        self._clock = clock
        self._started_at = clock()
        self._latest: NodeSnapshot | None = None
        self._polls = 0
        self._failures = 0
        self._errors: dict[str, int] = {}
        self._last_success = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> NodeSnapshot | None:
        return self._latest

    def set_allocations(self, allocations: AllocationProvider | None) -> None:
        self._allocations = allocations

    def set_before_poll(self, hook: Callable[[], None] | None) -> None:
        """Run before every poll (simulated GPUs use it to follow Slurm)."""
        self._before_poll = hook

    def poll_once(self) -> NodeSnapshot | None:
        began = time.perf_counter()
        self._polls += 1
        try:
            if self._before_poll is not None:
                self._before_poll()
            poll = self.source.poll()
            jobs = self._map_jobs(poll)
        except Exception:  # a bug must not kill the daemon: count it, log it, keep serving
            self._failures += 1
            log.exception("GPU poll failed")
            return self._latest
        for code, count in poll.errors.items():
            self._errors[code] = self._errors.get(code, 0) + count
        self._last_success = poll.timestamp
        snapshot = NodeSnapshot(
            hostname=self.hostname,
            hostname_label=self.hostname_label,
            poll=poll,
            jobs=jobs,
            stats=CollectorStats(
                polls_total=self._polls,
                poll_failures_total=self._failures,
                last_duration_seconds=time.perf_counter() - began,
                last_success_timestamp=self._last_success,
                errors_total=dict(self._errors),
                interval_seconds=self.interval,
            ),
            started_at=self._started_at,
        )
        self._latest = snapshot  # one reference swap: readers never see half a snapshot
        return snapshot

    def _map_jobs(self, poll: GpuPoll) -> dict[int, tuple[JobRef, ...]]:
        by_process: dict[int, list[JobRef]] = {}
        pids = []
        for gpu in poll.gpus:
            for proc in gpu.processes:
                pids.append(proc.pid)
                job = self._mapper.job_for_pid(proc.pid)
                if job is not None and job not in by_process.get(gpu.index, []):
                    by_process.setdefault(gpu.index, []).append(job)
        self._mapper.forget_except(pids)
        allocations: Mapping[int, Sequence[JobRef]] = {}
        if self._allocations is not None:
            try:
                allocations = self._allocations()
            except Exception:
                log.exception("reading Slurm GPU allocations failed")
        return merge_jobs(by_process, allocations)

    def start(self) -> None:
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name="gpuwarden-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.poll_once()
            next_at += self.interval
            if next_at < time.monotonic():  # fell behind (suspend, slow poll): do not burst
                next_at = time.monotonic() + self.interval

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        self.source.close()
