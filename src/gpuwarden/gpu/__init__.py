"""GPU sources: one model (:class:`GpuPoll`), two backends (NVML, simulation).

Usable as a library with no server running::

    from gpuwarden.gpu import open_source
    source = open_source("auto")
    poll = source.poll()
"""

from __future__ import annotations

from pathlib import Path

from gpuwarden.gpu.model import (
    APPLICATION_XIDS,
    GpuIdentity,
    GpuPoll,
    GpuProcess,
    GpuSample,
    GpuSource,
    NoGpuFound,
    SourceHealth,
    XidCount,
    is_application_xid,
)

BACKENDS = ("auto", "nvml", "sim")

__all__ = [
    "APPLICATION_XIDS",
    "BACKENDS",
    "GpuIdentity",
    "GpuPoll",
    "GpuProcess",
    "GpuSample",
    "GpuSource",
    "NoGpuFound",
    "SourceHealth",
    "XidCount",
    "is_application_xid",
    "open_source",
]


def open_source(
    backend: str,
    *,
    sim_gpus: int = 4,
    sim_model: str = "h100",
    sim_profiles: dict[int, str] | None = None,
    hostname: str = "localhost",
    sim_faults: dict[int, str] | None = None,
    sim_fault_file: Path | None = None,
) -> GpuSource:
    """A started GPU source.  ``auto`` means NVML and never falls back to simulation
    silently: without GPUs it raises :class:`NoGpuFound`, whose message says how to ask
    for ``sim``."""
    if backend == "sim":
        from gpuwarden.gpu.sim import SimSource

        source: GpuSource = SimSource(sim_gpus, sim_model, sim_profiles, hostname=hostname,
                                      faults=sim_faults, fault_file=sim_fault_file)
    elif backend in ("nvml", "auto"):
        from gpuwarden.gpu.nvml import NvmlSource

        source = NvmlSource()
    else:
        raise ValueError(f"unknown GPU backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    source.start()
    return source
