"""Each GPU's peak utilization since the reclaim cycle last asked, kept as the scraper
publishes each node's result, so a cycle reads no history from the metrics store.

:meth:`RunningPeaks.observe` subscribes to the scraper (``Scraper.subscribers``): it runs
once per scrape, on the scraper's event loop (~15 us for a node of 8 GPUs).  Each cycle
takes the peaks (:meth:`RunningPeaks.take`: one swap under a lock, the cycle runs in a
worker thread) and judges a GPU not reported since the last cycle on its latest sample.
What is kept here only ever makes a GPU busier than its latest sample says: whether the
data is fresh at all is the cycle's question, and the re-check right before an action
still reads the whole streak from the store.
"""

from __future__ import annotations

import threading

from gpuwarden.metrics.scraper import TargetState
from gpuwarden.reclaim.ladder import Gpu

UTIL = "DCGM_FI_DEV_GPU_UTIL"


class RunningPeaks:
    def __init__(self, field: str = UTIL) -> None:
        self._field = field
        self._lock = threading.Lock()
        self._peaks: dict[Gpu, float] = {}

    def observe(self, state: TargetState) -> None:
        """One node's scrape result, as the scraper publishes it (a failed or refused
        scrape keeps its previous snapshot: it adds nothing)."""
        if not state.up or state.bad_data is not None or state.snapshot is None:
            return
        name, field = state.target.name, self._field
        values = [(g.index, v) for g in state.snapshot.gpus
                  if (v := g.fields.get(field)) is not None]
        with self._lock:
            peaks = self._peaks
            for index, value in values:
                key = (name, index)
                if value > peaks.get(key, -1.0):
                    peaks[key] = float(value)

    def take(self) -> dict[Gpu, float]:
        """The peaks since the previous take, and a fresh start."""
        with self._lock:
            taken, self._peaks = self._peaks, {}
        return taken
