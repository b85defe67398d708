"""The protocol every Slurm output-shape adapter implements."""

from __future__ import annotations

from typing import Protocol

from gpuwarden.slurm.model import NodeInfo, SlurmJob


class OutputShape(Protocol):
    """How to ask squeue/sinfo for one output shape, and how to read it back."""

    name: str
    squeue_args: tuple[str, ...]
    sinfo_args: tuple[str, ...]
    has_gpu_detail: bool
    """True when ``parse_jobs`` fills ``SlurmJob.gpu_detail`` itself (no scontrol needed)."""

    def parse_jobs(self, text: str) -> list[SlurmJob]: ...

    def parse_nodes(self, text: str) -> NodeInfo: ...
