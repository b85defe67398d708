"""``scontrol -d -o show job`` -> GPU indices held per node, per job.

The detail lines look like ``Nodes=node[1-2] CPU_IDs=0 Mem=0 GRES=gpu:a100:2(IDX:0-1)``,
one group per set of nodes with the same allocation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.gres import parse_gres, split_top_level
from gpuwarden.slurm.hostlist import expand_hostlist

_RECORD_RE = re.compile(r"(?m)^JobId=(\d+)\b")
_EXIT_RE = re.compile(r"(?:^|\s)ExitCode=(\d+):(\d+)(?:\s|$)")
_DETAIL_RE = re.compile(r"(?:^|\s)Nodes=(\S+) CPU_IDs=\S* Mem=\S* GRES=(\S*)")


def parse_job_gpu_details(text: str) -> dict[int, Mapping[str, tuple[int, ...]]]:
    """Job id -> {node: GPU indices} for every job in the output (empty when no GPUs)."""
    out: dict[int, Mapping[str, tuple[int, ...]]] = {}
    starts = list(_RECORD_RE.finditer(text))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        out[int(m.group(1))] = _gpu_detail(text[m.start():end])
    if not starts and text.strip() and "No jobs in the system" not in text:
        raise ParseError(f"no JobId= records in scontrol output: {text[:200]!r}")
    return out


def _gpu_detail(record: str) -> Mapping[str, tuple[int, ...]]:
    detail: dict[str, list[int]] = {}
    for m in _DETAIL_RE.finditer(record):
        indices: list[int] = []
        for part in split_top_level(m.group(2)):
            if not (part == "gpu" or part.startswith("gpu:") or part.startswith("gpu(")):
                continue  # shard/mps details use other notations
            for item in parse_gres(part):
                indices.extend(item.indices or ())
        if indices:
            for node in expand_hostlist(m.group(1)):
                detail.setdefault(node, []).extend(indices)
    return MappingProxyType({n: tuple(sorted(set(ix))) for n, ix in detail.items()})


def parse_job_exit_codes(text: str) -> dict[int, tuple[int, int]]:
    """Job id -> (exit status, signal) from ``scontrol -o show job`` (``ExitCode=1:0``)."""
    out: dict[int, tuple[int, int]] = {}
    starts = list(_RECORD_RE.finditer(text))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        code = _EXIT_RE.search(text, m.start(), end)
        if code is not None:
            out[int(m.group(1))] = (int(code.group(1)), int(code.group(2)))
    if not starts and text.strip() and "No jobs in the system" not in text:
        raise ParseError(f"no JobId= records in scontrol output: {text[:200]!r}")
    return out
