"""Run the selected checks on one node: what the node daemon's ``/api/v1/checks`` does."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gpuwarden.checks import active, passive
from gpuwarden.checks.model import CheckResult, Expectation
from gpuwarden.checks.passive import CheckContext
from gpuwarden.checks.spec import CheckSpec, selected
from gpuwarden.gpu.model import GpuPoll

log = logging.getLogger(__name__)


def run_checks(poll: GpuPoll, checks: Sequence[CheckSpec], level: str, *,
               expect: Expectation | None = None,
               jobs: Mapping[int, Sequence[Any]] | None = None) -> list[CheckResult]:
    """Every enabled check up to ``level``, in order; one that raises is a failed result
    naming the error (a bug in one check must not hide the others)."""
    ctx = CheckContext(poll, jobs or {}, expect or Expectation())
    results = []
    for spec in selected(list(checks), level):
        why = active.missing_need(spec, poll.backend) if spec.needs else None
        if not poll.gpus and "gpu" in spec.needs:
            why = "skipped: no GPU listed"
        if why is not None:
            results.append(CheckResult(spec.name, spec.level, "skip", why, "",
                                       spec.description))
            continue
        fn = passive.EVALUATORS.get(spec.kind) or active.EVALUATORS[spec.kind]
        try:
            results.append(fn(spec, ctx))
        except Exception as exc:
            log.exception("check %s failed to run", spec.name)
            results.append(CheckResult(spec.name, spec.level, "fail",
                                       f"check error: {type(exc).__name__}: {exc}"[:300],
                                       "runs", spec.description))
    return results
